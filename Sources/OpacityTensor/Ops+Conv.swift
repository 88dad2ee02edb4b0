import Foundation

/// The geometry of a 2-D convolution or pooling window.
public struct Conv2DGeometry: Equatable, Sendable {
    /// `(kh, kw)`.
    public var kernel: (Int, Int)
    /// `(vertical, horizontal)`.
    public var stride: (Int, Int)
    /// `(vertical, horizontal)` zeros on each side.
    public var padding: (Int, Int)
    /// `(vertical, horizontal)` spacing of the taps.
    public var dilation: (Int, Int)

    /// A window geometry.
    public init(kernel: (Int, Int), stride: (Int, Int) = (1, 1), padding: (Int, Int) = (0, 0), dilation: (Int, Int) = (1, 1)) {
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
    }

    /// Equal when all four pairs are equal.
    public static func == (a: Self, b: Self) -> Bool {
        a.kernel == b.kernel && a.stride == b.stride && a.padding == b.padding && a.dilation == b.dilation
    }

    /// Output size along one axis.
    @inlinable
    static func outSize(_ n: Int, k: Int, s: Int, p: Int, d: Int) -> Int { (n + 2 * p - d * (k - 1) - 1) / s + 1 }

    func output(h: Int, w: Int) -> (Int, Int) {
        (Self.outSize(h, k: kernel.0, s: stride.0, p: padding.0, d: dilation.0),
         Self.outSize(w, k: kernel.1, s: stride.1, p: padding.1, d: dilation.1))
    }
}

// MARK: - conv2d

extension Tensor {
    /// ``conv2d(_:bias:stride:padding:dilation:groups:)``, written over this tensor's own
    /// storage where that is possible, else into a new tensor as `conv2d` does: the same values,
    /// bit for bit, either way.
    ///
    /// In place takes: no graph recorded (``Autograd/isRecording`` false), this tensor with no
    /// gradient node and its storage held by nothing else (no copy, view or trace), and a
    /// kernel that can:
    /// - the Winograd kernel with shared blocks (by default in inference from 2 threads up), `Cin ==
    ///   Cout`, a 3x3 stride-1 kernel with padding 1. Measured (resnet152 RetinaNet, 512 px,
    ///   16 threads): the head's P2 convolutions, 256 channels at 128x128, no longer hold a
    ///   16 MiB output beside their input at the forward pass's peak;
    /// - a depthwise convolution (`groups == Cin == Cout`) whose output has the input's shape
    ///   (stride 1, padding `dilation * (k - 1) / 2`), at any thread count: a separable
    ///   convolution's depthwise half (``Sequential`` runs an ``InPlaceLayer`` this way).
    /// - Returns: `[N, Cout, Ho, Wo]`, as `conv2d`.
    public consuming func conv2dInPlace(
        _ weight: Tensor, bias: Tensor? = nil, stride: (Int, Int) = (1, 1), padding: (Int, Int) = (0, 0), dilation: (Int, Int) = (1, 1),
        groups: Int = 1
    ) -> Tensor {
        if !Autograd.isRecording, node == nil, weight.node == nil, bias?.node == nil, rank == 4, weight.rank == 4,
            weight.shape[0] == shape[1], bias.map({ $0.shape == [weight.shape[0]] }) ?? true,
            (groups == 1 && weight.shape[1] == shape[1]) || (groups == shape[1] && weight.shape[1] == 1),
            stride.0 > 0, stride.1 > 0, dilation.0 > 0, dilation.1 > 0, padding.0 >= 0, padding.1 >= 0,
            OpTrace.current == nil, storage.regeneration == nil, ownsStorageAlone()
        {
            let geo = Conv2DGeometry(kernel: (weight.shape[2], weight.shape[3]), stride: stride, padding: padding, dilation: dilation)
            guard geo.output(h: shape[2], w: shape[3]) == (shape[2], shape[3]) else {
                return conv2d(weight, bias: bias, stride: stride, padding: padding, dilation: dilation, groups: groups)
            }
            // This storage's only holder: the cached values derived from its old contents go
            // once they are written over, and stay when no kernel can.
            if KernelProviders.convolution.forwardInPlace(input: self, weight: weight, bias: bias, geometry: geo, groups: groups) {
                storage.contentsWillChange()
                return self
            }
        }
        return conv2d(weight, bias: bias, stride: stride, padding: padding, dilation: dilation, groups: groups)
    }

    /// 2-D convolution (cross-correlation, as PyTorch's `conv2d`).
    ///
    /// - Parameters:
    ///   - weight: `[Cout, Cin/groups, kh, kw]`.
    ///   - bias: `[Cout]` or `nil`.
    ///   - stride, padding, dilation: `(vertical, horizontal)`.
    ///   - groups: channel groups; `groups == Cin` with one input channel per group is a
    ///     depthwise convolution (any channel multiplier `Cout / Cin`) and runs a direct kernel.
    /// - Returns: `[N, Cout, Ho, Wo]` with `Ho = (H + 2p - d(k-1) - 1) / s + 1`.
    ///
    /// The arithmetic is done by ``KernelProviders/convolution`` (the CPU kernels in
    /// `Kernels/CPU/`): dense and grouped convolutions reach SGEMM: a 1x1 stride-1 convolution multiplies
    /// the input directly, others unfold tiles of output rows (im2col) small enough to
    /// stay in cache. The input gradient of a stride-1 convolution is itself a convolution
    /// (of the output gradient with the flipped, transposed kernel) and takes the same path.
    public func conv2d(_ weight: Tensor, bias: Tensor? = nil, stride: (Int, Int) = (1, 1), padding: (Int, Int) = (0, 0),
                       dilation: (Int, Int) = (1, 1), groups: Int = 1) -> Tensor {
        shapeCheck(rank == 4 && weight.rank == 4, "conv2d", "input \(describe(shape)) and weight \(describe(weight.shape)) must both be rank 4")
        let (n, cin, h, w) = (shape[0], shape[1], shape[2], shape[3])
        let cout = weight.shape[0]
        shapeCheck(groups > 0 && cin % groups == 0 && cout % groups == 0 && weight.shape[1] == cin / groups, "conv2d",
                   "input \(describe(shape)) with \(groups) groups does not fit weight \(describe(weight.shape))")
        shapeCheck(stride.0 > 0 && stride.1 > 0 && dilation.0 > 0 && dilation.1 > 0 && padding.0 >= 0 && padding.1 >= 0, "conv2d",
                   "stride \(stride) and dilation \(dilation) must be positive, padding \(padding) not negative")
        if let b = bias { shapeCheck(b.shape == [cout], "conv2d", "bias \(describe(b.shape)) for \(cout) output channels") }
        let geo = Conv2DGeometry(kernel: (weight.shape[2], weight.shape[3]), stride: stride, padding: padding, dilation: dilation)
        let (ho, wo) = geo.output(h: h, w: w)
        shapeCheck(ho > 0 && wo > 0, "conv2d", "input \(describe(shape)) is too small for weight \(describe(weight.shape)) with padding \(padding) and dilation \(dilation)")
        let out = Tensor(uninitializedShape: [n, cout, ho, wo])
        let kernels = KernelProviders.convolution
        kernels.forward(input: self, weight: weight, bias: bias, geometry: geo, groups: groups, into: out)
        // The input as backward needs it (the weight gradient reads it): kept, or recomputed
        // from its recipe when it is a batch norm's output (``SavedActivation``).
        let x = SavedActivation(self), wt = weight.detached()
        let needX = node != nil, needW = weight.node != nil, needB = bias?.node != nil
        var inputs = [self, weight]
        if let b = bias { inputs.append(b) }
        OpTrace.note("conv2d", inputs, out, ["stride": .ints([stride.0, stride.1]), "padding": .ints([padding.0, padding.1]), "dilation": .ints([dilation.0, dilation.1]), "groups": .int(groups)])
        let result = Autograd.record("conv2d", out, inputs: inputs) { g in
            let gb = needB ? kernels.backwardBias(gradOut: g) : nil
            guard needW || needX else { return bias == nil ? [nil, nil] : [nil, nil, gb] }
            // The weight gradient first: when the input was written again for it (from a recipe
            // or its packed form), that map is released before the input gradient, which does
            // not read it, is allocated (one map less at the step's peak, a RetinaNet head's
            // P2 convolutions).
            let gw = needW ? kernels.backwardWeights(input: x.value(), weight: wt, gradOut: g, geometry: geo, groups: groups) : nil
            let gx = needX ? kernels.backwardData(inputShape: x.shape, weight: wt, gradOut: g, geometry: geo, groups: groups) : nil
            return bias == nil ? [gx, gw] : [gx, gw, gb]
        }
        let doubling = groups == 1 && geo.kernel == (1, 1) && geo.padding == (0, 0) && cout >= 2 * cin
        let depthwise = groups == cin && weight.shape[1] == 1
        if result.node != nil, needW, Autograd.selectiveRecomputation, Autograd.convolutionRecomputation, doubling || depthwise {
            // The node keeps its input and weight anyway, so the op that saves the output for its
            // backward can keep this recipe instead, the same kernel on the same values
            // (``Autograd/convolutionRecomputation``): a 1x1 convolution that at least doubles
            // the channels (for the norm after it), or a depthwise one, `k*k` operations per
            // value (for a separable convolution's pointwise half).
            // A squeeze-and-excitation block reads a widening convolution's output twice in
            // backward, through its norm's recipe (the excitation's product) and in the norm's
            // own backward: the second use copies the first's map (``RegeneratedMap``) instead of
            // a second GEMM.
            let bv = bias?.detached(), memo = RegeneratedMap()
            out.storage.regeneration = { dst in
                if let earlier = memo.take() {
                    dst.mutablePointer.update(from: earlier.pointer, count: earlier.count)
                    return
                }
                let xv = x.value()
                kernels.forward(input: xv, weight: wt, bias: bv, geometry: geo, groups: groups, into: dst)
                if doubling { memo.keep(dst) }
            }
        }
        return result
    }
}

// MARK: - FPN top-down merge

extension Tensor {
    /// A feature pyramid's top-down merge: `conv2d(weight, bias: bias) + above.upsampleNearest2x()`
    /// (the lateral convolution of this map plus the coarser merged map enlarged 2x by nearest
    /// neighbour; Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017,
    /// section 3), the same values and gradients bit for bit, without the upsampled map: the
    /// sum is written over the convolution's output.
    ///
    /// - Parameters:
    ///   - weight, bias, stride, padding, dilation, groups: as in
    ///     ``conv2d(_:bias:stride:padding:dilation:groups:)``; the output is `[N, Cout, Ho, Wo]`.
    ///   - above: `[N, Cout, Ho / 2, Wo / 2]` (`Ho` and `Wo` even; a pyramid whose sizes are
    ///     not exact halves crops the upsampled map and uses the separate ops).
    /// - Returns: `[N, Cout, Ho, Wo]`.
    ///
    /// In training with ``Autograd/convolutionRecomputation`` on, the result carries a recipe
    /// for its values: the convolution again from the input its node keeps for the weight
    /// gradient anyway, plus `above`, itself kept or recomputed by its own recipe. The
    /// convolution after the merge (the FPN's 3x3 output convolution) keeps that recipe instead
    /// of the map (``SavedActivation``): at 512 px, batch 2, 256 channels, the P2-P4 merged
    /// maps are 42 MiB that no longer stay alive through the heads' backward, where a training
    /// step peaks; backward runs the lateral convolutions again (1x1 GEMMs).
    public func conv2d(
        _ weight: Tensor, bias: Tensor? = nil, stride: (Int, Int) = (1, 1), padding: (Int, Int) = (0, 0),
        dilation: (Int, Int) = (1, 1), groups: Int = 1, addingUpsampled2x above: Tensor
    ) -> Tensor {
        var lateral = conv2d(weight, bias: bias, stride: stride, padding: padding, dilation: dilation, groups: groups)
        let (n, c, h, w) = (lateral.shape[0], lateral.shape[1], lateral.shape[2], lateral.shape[3])
        shapeCheck(
            above.shape == [n, c, h / 2, w / 2] && h % 2 == 0 && w % 2 == 0, "conv2d(addingUpsampled2x:)",
            "the map above must be [N, C, H/2, W/2] of the lateral \(describe(lateral.shape)) with even H and W, got \(describe(above.shape))")
        let out = lateral.elementwiseOutput()
        if out.storage !== lateral.storage { out.mutablePointer.update(from: lateral.pointer, count: lateral.count) }
        Tensor.addUpsampled2x(above.pointer, into: out.mutablePointer, planes: n * c, h: h / 2, w: w / 2)
        let input = copy lateral  // its node, for the graph
        let needAbove = above.node != nil, aboveShape = above.shape
        OpTrace.note("addUpsampled2x", [input, above], out)
        let result = Autograd.record("addUpsampled2x", out, inputs: [input, above]) { g in
            [g, needAbove ? Tensor.upsample2xGradient(g, toShape: aboveShape) : nil]
        }
        if result.node != nil, Autograd.selectiveRecomputation, Autograd.convolutionRecomputation {
            // The input and `above` as their own consumers keep them (packed, recomputed or
            // whole): no map more is held.
            let x = SavedActivation(self), a = SavedActivation(above)
            let wt = weight.detached(), bv = bias?.detached(), kernels = KernelProviders.convolution
            let geo = Conv2DGeometry(kernel: (weight.shape[2], weight.shape[3]), stride: stride, padding: padding, dilation: dilation)
            let memo = RegeneratedMap()
            result.storage.regeneration = { dst in
                if let earlier = memo.take() {
                    dst.mutablePointer.update(from: earlier.pointer, count: earlier.count)
                    return
                }
                kernels.forward(input: x.value(), weight: wt, bias: bv, geometry: geo, groups: groups, into: dst)
                let av = a.value()
                Tensor.addUpsampled2x(av.pointer, into: dst.mutablePointer, planes: n * c, h: h / 2, w: w / 2)
                memo.keep(dst)
            }
        }
        return result
    }

    /// `out[p, 2y + i, 2x + j] += src[p, y, x]` for `i, j` in `0...1`, over `planes` planes of
    /// `h x w` values in `src` (`2h x 2w` in `out`): the sum `out + upsampleNearest2x(src)` in
    /// its order of operands.
    static func addUpsampled2x(_ src: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, planes: Int, h: Int, w: Int) {
        Compute.parallelFor(planes, minPerThread: 8) { plane in
            let s = src + plane * h * w, d = out + plane * 4 * h * w
            for y in 0..<h {
                let r0 = d + 2 * y * 2 * w, r1 = r0 + 2 * w, sr = s + y * w
                for x in 0..<w {
                    let v = sr[x]
                    r0[2 * x] = r0[2 * x] + v
                    r0[2 * x + 1] = r0[2 * x + 1] + v
                    r1[2 * x] = r1[2 * x] + v
                    r1[2 * x + 1] = r1[2 * x + 1] + v
                }
            }
        }
    }

    /// The gradient of ``upsampleNearest2x()`` for an input of `shape` `[N, C, h, w]`: each
    /// 2x2 block of `g` summed, in the order ``upsampleNearest2x()``'s backward adds them.
    static func upsample2xGradient(_ g: Tensor, toShape shape: [Int]) -> Tensor {
        let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3])
        let gx = Tensor(uninitializedShape: shape)
        let gp = g.pointer, dp = gx.mutablePointer
        Compute.parallelFor(n * c, minPerThread: 8) { plane in
            let src = gp + plane * 4 * h * w
            let dst = dp + plane * h * w
            for y in 0..<h {
                let r0 = src + 2 * y * 2 * w, r1 = r0 + 2 * w
                for x in 0..<w { dst[y * w + x] = r0[2 * x] + r0[2 * x + 1] + r1[2 * x] + r1[2 * x + 1] }
            }
        }
        return gx
    }
}

/// The map an FPN merge's recipe wrote last, for its next use: the merged map of level `l` is
/// read in backward by its own output convolution and by the recipe of level `l - 1`'s merge,
/// which adds it upsampled, in either order. The second use copies it instead of running the
/// lateral convolutions again (without this, the recipes ran P3's lateral twice and P4's three
/// times: a resnet50 RetinaNet's kernel log at 512 px, batch 2, showed about 105 ms of
/// recomputation per step on a loaded machine; with it each lateral runs once more, counted
/// by a test). Held from the first use to the second, or until the recipe is freed with
/// the last node that keeps it (P2's, used once, right after its output convolution's
/// backward); all of it after the heads' backward, where a step peaks.
final class RegeneratedMap: @unchecked Sendable {
    private let lock = NSLock()
    private var map: Tensor?

    /// Keeps `t` (sharing its storage) for the next ``take()``.
    func keep(_ t: Tensor) { lock.withLock { map = t } }

    /// The map kept by ``keep(_:)``, if any; it is let go.
    func take() -> Tensor? {
        lock.withLock {
            defer { map = nil }
            return map
        }
    }
}
