/// The seam between the pooling ops (Ops+Pool.swift) and the code that computes them.
///
/// `Tensor.maxPool2d` and `Tensor.avgPool2d` check shapes, compute the output size, the
/// averaging divisors, allocate every buffer and record autograd; a provider only computes,
/// on contiguous row-major `Float32` planes. The CPU kernels
/// (`Kernels/CPU/CPUPooling.swift`) are the one provider today; another is chosen in
/// ``KernelProviders`` without a change to the ops.
protocol PoolingKernels: Sendable {
    /// Max pooling of each input plane into its output plane (padding counts as minus
    /// infinity; NaN wins). When `indices` is given, writes the flat in-plane index
    /// (`y * w + x`) of each output's maximum there (`[planes, ho, wo]`; -1 for an empty window).
    func maxForward(
        input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, indices: UnsafeMutablePointer<Int32>?,
        geometry: Pool2DGeometry)

    /// Max pooling backward: adds each output gradient to the input cell its index names.
    ///
    /// - Parameter gradInput: `[planes, h, w]`, zeroed by the caller.
    func maxBackward(
        gradOut: UnsafePointer<Float>, indices: UnsafePointer<Int32>, gradInput: UnsafeMutablePointer<Float>,
        geometry: Pool2DGeometry)

    /// Average pooling: the sum of each window's cells inside the input times the output
    /// cell's divisor (`divisors`: `[ho, wo]`, shared by all planes).
    func averageForward(
        input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, divisors: UnsafePointer<Float>,
        geometry: Pool2DGeometry)

    /// Average pooling backward: adds each output gradient times its divisor to every cell
    /// of its window inside the input.
    ///
    /// - Parameter gradInput: `[planes, h, w]`, zeroed by the caller.
    func averageBackward(
        gradOut: UnsafePointer<Float>, divisors: UnsafePointer<Float>, gradInput: UnsafeMutablePointer<Float>,
        geometry: Pool2DGeometry)
}

/// The sizes of one 2-D pooling: `planes` (`N * C`) input planes `[h, w]` pooled into
/// output planes `[ho, wo]`; `kernel`, `stride` and `padding` are `(vertical, horizontal)`.
struct Pool2DGeometry {
    var planes: Int
    var h: Int, w: Int
    var ho: Int, wo: Int
    var kernel: (Int, Int), stride: (Int, Int), padding: (Int, Int)
}
