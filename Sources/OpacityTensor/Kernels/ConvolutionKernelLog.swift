import Foundation

/// Which kernel each convolution call used and how long it took, recorded while ``record(_:)``
/// runs (`opacity-bench detector` prints it per detector). Off, noting a call costs one branch.
public enum ConvolutionKernelLog {
    /// One distinct convolution: the pass, its shapes and geometry, and the kernel that ran it.
    public struct Entry: Hashable, Sendable {
        /// `forward`, `input gradient` or `weight gradient`.
        public let pass: String
        /// The convolution's input `[N, C, H, W]` (for every pass: the forward input).
        public let input: [Int]
        /// The weight `[Cout, Cin / groups, kh, kw]`.
        public let weight: [Int]
        /// `(vertical, horizontal)` stride, padding and dilation.
        public let stride: [Int], padding: [Int], dilation: [Int]
        /// Channel groups.
        public let groups: Int
        /// The kernel: `winograd` (F(4x4, 3x3)), `im2col` (unfold + SGEMM), `1x1 gemm`, `row
        /// expansion` (stems), `depthwise` (direct), `col2im` (strided input gradient), and the
        /// grouped convolutions' per-group task variants (`grouped ...`).
        public let kernel: String

        /// The geometry without the batch: `3x3/1 p1 256->256 at 64x64` (groups and dilation
        /// when not 1).
        /// This entry with another kernel name.
        func withKernel(_ k: String) -> Entry {
            Entry(pass: pass, input: input, weight: weight, stride: stride, padding: padding, dilation: dilation, groups: groups, kernel: k)
        }

        public var geometry: String {
            var s = "\(weight[2])x\(weight[3])/\(stride[0]) p\(padding[0]) \(input[1])->\(weight[0])"
            if groups > 1 { s += " g\(groups)" }
            if dilation != [1, 1] { s += " d\(dilation[0])" }
            return s + " at \(input[2])x\(input[3])"
        }
    }

    private static let lock = NSLock()
    nonisolated(unsafe) private static var active = false
    nonisolated(unsafe) private static var counts: [Entry: Int] = [:]
    nonisolated(unsafe) private static var order: [Entry] = []
    /// Seconds per convolution and pass (the entry with an empty kernel name).
    nonisolated(unsafe) private static var seconds: [Entry: Double] = [:]

    /// The clock ``record(_:)`` times convolution calls with, in seconds (default: wall time
    /// since boot). `opacity-bench` sets its own (wall or process CPU time per thread) so that
    /// the figures add up with its other timings. Set it before recording.
    nonisolated(unsafe) public static var clock: @Sendable () -> Double = {
        Double(DispatchTime.now().uptimeNanoseconds) * 1e-9
    }

    /// Runs `body` and returns its result with each distinct convolution it ran (in first-use
    /// order), how many times, and the seconds (``clock``) its calls took in all (the whole call of
    /// the kernel provider, reorders and scratch included; a shape that ran two kernels
    /// reports their sum on both). Not reentrant; convolutions on other threads meanwhile are
    /// recorded too.
    public static func record<R>(_ body: () throws -> R) rethrows -> (R, [(entry: Entry, count: Int, seconds: Double)]) {
        lock.withLock {
            counts = [:]
            order = []
            seconds = [:]
            active = true
        }
        defer { lock.withLock { active = false } }
        let r = try body()
        let list = lock.withLock { order.map { ($0, counts[$0]!, seconds[$0.withKernel("")] ?? 0) } }
        return (r, list)
    }

    /// Runs one call of a convolution pass (`forward`, `input gradient`, `weight gradient`)
    /// and, while ``record(_:)`` runs, adds its wall time to the pass of that shape.
    @inline(__always)
    static func timed<R>(
        _ pass: String, input: [Int], weight: [Int], geometry g: Conv2DGeometry, groups: Int, _ body: () -> R
    ) -> R {
        guard active else { return body() }
        let t0 = clock()
        let r = body()
        let dt = clock() - t0
        let e = Entry(
            pass: pass, input: input, weight: weight, stride: [g.stride.0, g.stride.1], padding: [g.padding.0, g.padding.1],
            dilation: [g.dilation.0, g.dilation.1], groups: groups, kernel: "")
        lock.withLock { seconds[e, default: 0] += dt }
        return r
    }

    /// Notes one call of `kernel` for the convolution of `plan` (the forward plan).
    @inline(__always)
    static func note(_ pass: String, _ plan: ConvPlan, _ kernel: String) {
        guard active else { return }
        let g = plan.geo
        let e = Entry(
            pass: pass, input: [plan.n, plan.cin, plan.h, plan.w], weight: [plan.cout, plan.cinG, g.kernel.0, g.kernel.1],
            stride: [g.stride.0, g.stride.1], padding: [g.padding.0, g.padding.1], dilation: [g.dilation.0, g.dilation.1],
            groups: plan.groups, kernel: kernel)
        lock.withLock {
            if counts[e] == nil { order.append(e) }
            counts[e, default: 0] += 1
        }
    }
}
