import OpacityTensor

// The building blocks of NASNet-A, named as in Cadene's `nasnet_mobile.py`. Pools have no
// parameters and are plain tensor operations here; every module with parameters keeps the
// reference's name.

/// ReLU, 1x1 convolution, batch norm (eps 0.001) (`conv`, `bn`): the cells' `conv_1x1` and
/// `conv_prev_1x1` (the reference's `ReLUConvBN`).
func reluConvBN(_ inChannels: Int, _ outChannels: Int) -> ConvNormAct {
    ConvNormAct(inChannels, outChannels, kernel: 1, eps: 1e-3, order: .actConvNorm, initializer: .pytorchDefault)
}

/// A cell of NASNet-A: it reads the previous map `x` and the one before it, `other`.
protocol NASNetCell: Module {
    /// The cell's output for the last map and the one before it.
    func callAsFunction(_ x: Tensor, _ other: Tensor) -> Tensor
}

/// A depthwise convolution followed by a pointwise one (`depthwise_conv2d`, `pointwise_conv2d`).
///
/// `shifted` reproduces the reference's "zero-pad one row and column at the top left,
/// convolve, drop the first output row and column" as one convolution padded
/// `padding + 1 - stride` at the top and left and `padding` at the bottom and right.
final class NASNetSeparableConv: Module, Layer {
    /// The depthwise convolution (`depthwise_conv2d`).
    @Named("depthwise_conv2d") var depthwise: Conv2d
    /// The 1x1 convolution (`pointwise_conv2d`).
    @Named("pointwise_conv2d") var pointwise: Conv2d
    let kernel: Int, stride: Int, padding: Int, shifted: Bool

    init(_ inChannels: Int, _ outChannels: Int, kernel: Int, stride: Int, padding: Int, shifted: Bool) {
        let depthwise = Conv2d(inChannels, inChannels, kernel: kernel, stride: stride, groups: inChannels, bias: false)
        let pointwise = Conv2d(inChannels, outChannels, kernel: 1, bias: false)
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
        self.shifted = shifted
        super.init()
        self.depthwise = depthwise
        self.pointwise = pointwise
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        let w = depthwise.weight.tensor, g = depthwise.groups
        let s = (stride, stride)
        let y: Tensor
        if shifted {
            let lead = padding + 1 - stride
            y = x.padded2d(left: lead, right: padding, top: lead, bottom: padding).conv2d(w, stride: s, groups: g)
        } else {
            y = x.conv2d(w, stride: s, padding: (padding, padding), groups: g)
        }
        return pointwise(y)
    }
}

/// ReLU, separable convolution, batch norm, ReLU, separable convolution, batch norm
/// (`separable_1`, `bn_sep_1`, `separable_2`, `bn_sep_2`). The stride is on the first.
///
/// `stem` changes the channel count in the first separable convolution
/// (BranchSeparablesStem), otherwise in the second; `shifted` is the reference's
/// BranchSeparables "specific" and BranchSeparablesReduction padding.
final class BranchSeparables: Module, Layer {
    /// ReLU, the first separable convolution (with the stride), batch norm (`separable_1`, `bn_sep_1`).
    let unit1: ConvNormAct
    /// ReLU, the second separable convolution, batch norm (`separable_2`, `bn_sep_2`).
    let unit2: ConvNormAct

    init(_ inChannels: Int, _ outChannels: Int, kernel: Int, stride: Int, padding: Int, stem: Bool = false, shifted: Bool = false) {
        let mid = stem ? outChannels : inChannels
        unit1 = ConvNormAct(conv: NASNetSeparableConv(inChannels, mid, kernel: kernel, stride: stride, padding: padding, shifted: shifted),
                            norm: BatchNorm2d(mid, eps: 1e-3), order: .actConvNorm, keys: .inline(conv: "separable_1", norm: "bn_sep_1"))
        unit2 = ConvNormAct(conv: NASNetSeparableConv(mid, outChannels, kernel: kernel, stride: 1, padding: padding, shifted: false),
                            norm: BatchNorm2d(outChannels, eps: 1e-3), order: .actConvNorm, keys: .inline(conv: "separable_2", norm: "bn_sep_2"))
    }

    /// `bn_sep_2(separable_2(relu(bn_sep_1(separable_1(relu(x))))))`, with the middle ReLU
    /// fused into `bn_sep_1` (the same values; in training `separable_2` then keeps the norm's
    /// recipe instead of the map, ``ConvNormAct``).
    func callAsFunction(_ x: Tensor) -> Tensor {
        let middle = unit1.norm(unit1.conv(x.relu()), relu: true)
        return unit2.norm(unit2.conv(middle))
    }
}

/// A 1x1 convolution (`conv`) on every other pixel: `path_1` and `path_2`.
final class PathConv: Module {
    let conv: Conv2d
    init(_ inChannels: Int, _ outChannels: Int) { conv = Conv2d(inChannels, outChannels, kernel: 1, bias: false) }
}

/// The reference's factorized reduction of the previous map: ReLU, then two 1x1
/// convolutions on the even pixels (`path_1`) and on the odd pixels (`path_2`, shifted by one
/// with a zero row and column at the bottom right), concatenated and normalised
/// (`final_path_bn`). Halves the size, rounding up.
func factorizedReduce(_ x: Tensor, _ path1: PathConv, _ path2: PathConv, _ bn: BatchNorm2d) -> Tensor {
    let r = x.relu()
    let a = path1.conv(r.avgPool2d(kernel: (1, 1), stride: (2, 2)))
    let b = path2.conv(r.padded2d(left: -1, right: 1, top: -1, bottom: 1).avgPool2d(kernel: (1, 1), stride: (2, 2)))
    return bn(Tensor.concat([a, b], axis: 1))
}

/// A cell that halves the size: `cell_stem_0`, `cell_stem_1`, `reduction_cell_0` and
/// `reduction_cell_1` share one wiring and differ in how they prepare their two inputs and
/// whether their stride-2 paths are shifted.
///
/// With A the cell's `conv_1x1` output and B its other input:
/// `c0 = left0(A) + right0(B)`, `c1 = maxpool(A) + right1(B)`, `c2 = avgpool(A) + right2(B)`,
/// `c3 = avgpool_s1(c0) + c1`, `c4 = left4(c0) + maxpool(A)`; output `[c1, c2, c3, c4]`.
final class ReductionCell: Module, NASNetCell {
    enum Kind { case stem0, stem1, reduction }

    let kind: Kind
    @Named("conv_1x1") var conv1x1: ConvNormAct
    @Named("conv_prev_1x1") var convPrev: ConvNormAct?
    @Named("path_1") var path1: PathConv?
    @Named("path_2") var path2: PathConv?
    @Named("final_path_bn") var finalPathBN: BatchNorm2d?
    @Named("comb_iter_0_left") var left0: BranchSeparables
    @Named("comb_iter_0_right") var right0: BranchSeparables
    @Named("comb_iter_1_right") var right1: BranchSeparables
    @Named("comb_iter_2_right") var right2: BranchSeparables
    @Named("comb_iter_4_left") var left4: BranchSeparables

    /// - Parameters:
    ///   - inA: channels of the map `conv_1x1` reads.
    ///   - inB: channels of the other input.
    ///   - filters: channels of each of the four outputs.
    init(_ kind: Kind, inA: Int, inB: Int, filters f: Int) {
        self.kind = kind
        let shifted = kind != .stem0
        // In cell_stem_0 the right branches read the raw stem output (BranchSeparablesStem).
        let stem = kind == .stem0
        let inRight = stem ? inB : f
        super.init()
        conv1x1 = reluConvBN(inA, f)
        left0 = BranchSeparables(f, f, kernel: 5, stride: 2, padding: 2, shifted: shifted)
        right0 = BranchSeparables(inRight, f, kernel: 7, stride: 2, padding: 3, stem: stem, shifted: shifted)
        right1 = BranchSeparables(inRight, f, kernel: 7, stride: 2, padding: 3, stem: stem, shifted: shifted)
        right2 = BranchSeparables(inRight, f, kernel: 5, stride: 2, padding: 2, stem: stem, shifted: shifted)
        left4 = BranchSeparables(f, f, kernel: 3, stride: 1, padding: 1, shifted: shifted)
        switch kind {
        case .stem0: break
        case .stem1:
            path1 = PathConv(inB, f / 2)
            path2 = PathConv(inB, f / 2)
            finalPathBN = BatchNorm2d(f, eps: 1e-3)
        case .reduction:
            convPrev = reluConvBN(inB, f)
        }
    }

    /// - Parameters:
    ///   - x: the map `conv_1x1` reads (`x_conv0` for cell_stem_0, `x_stem_0` for
    ///     cell_stem_1, the last cell's output for a reduction cell).
    ///   - other: `x_conv0` for the stem cells, the cell before the last for a reduction cell.
    func callAsFunction(_ x: Tensor, _ other: Tensor) -> Tensor {
        let a = conv1x1(x)
        let b: Tensor
        switch kind {
        case .stem0: b = other
        case .stem1: b = factorizedReduce(other, path1!, path2!, finalPathBN!)
        case .reduction: b = convPrev!(other)
        }
        // The shifted cells' MaxPoolPad / AvgPoolPad (pad top-left, pool with padding 1, crop)
        // equal an unpadded ceil-mode pool; cell_stem_0 pools with plain padding 1.
        let shifted = kind != .stem0
        func maxPool(_ t: Tensor) -> Tensor {
            shifted ? t.maxPool2d(kernel: (3, 3), stride: (2, 2), ceilMode: true)
                : t.maxPool2d(kernel: (3, 3), stride: (2, 2), padding: (1, 1))
        }
        func avgPool(_ t: Tensor) -> Tensor {
            shifted ? t.avgPool2d(kernel: (3, 3), stride: (2, 2), ceilMode: true, countIncludePad: false)
                : t.avgPool2d(kernel: (3, 3), stride: (2, 2), padding: (1, 1), countIncludePad: false)
        }
        let c0 = left0(a) + right0(b)
        let pooledA = maxPool(a)
        let c1 = pooledA + right1(b)
        let c2 = avgPool(a) + right2(b)
        let c3 = c0.avgPool2d(kernel: (3, 3), stride: (1, 1), padding: (1, 1), countIncludePad: false) + c1
        let c4 = left4(c0) + pooledA
        return Tensor.concat([c1, c2, c3, c4], axis: 1)
    }
}

/// A cell that keeps the size: `cell_0` ... `cell_15` except the reductions. Its left input
/// comes from the cell before the last, through `conv_prev_1x1`, or, in the first cell after
/// a reduction (FirstCell), through the factorized reduction of a map twice its size.
///
/// With L the left and R the right (`conv_1x1`) input: `c0 = left0(R) + right0(L)`,
/// `c1 = left1(L) + right1(L)`, `c2 = avgpool(R) + L`, `c3 = 2 avgpool(L)`,
/// `c4 = left4(R) + R`; output `[L, c0, c1, c2, c3, c4]`.
final class NormalCell: Module, NASNetCell {
    @Named("conv_prev_1x1") var convPrev: ConvNormAct?
    @Named("path_1") var path1: PathConv?
    @Named("path_2") var path2: PathConv?
    @Named("final_path_bn") var finalPathBN: BatchNorm2d?
    @Named("conv_1x1") var conv1x1: ConvNormAct
    @Named("comb_iter_0_left") var left0: BranchSeparables
    @Named("comb_iter_0_right") var right0: BranchSeparables
    @Named("comb_iter_1_left") var left1: BranchSeparables
    @Named("comb_iter_1_right") var right1: BranchSeparables
    @Named("comb_iter_4_left") var left4: BranchSeparables

    init(inLeft: Int, outLeft: Int, inRight: Int, outRight: Int, first: Bool) {
        // FirstCell's left input has 2 * outLeft channels (two paths); both equal outRight.
        let l = first ? 2 * outLeft : outLeft, r = outRight
        super.init()
        conv1x1 = reluConvBN(inRight, r)
        left0 = BranchSeparables(r, r, kernel: 5, stride: 1, padding: 2)
        right0 = BranchSeparables(l, l, kernel: 3, stride: 1, padding: 1)
        left1 = BranchSeparables(l, l, kernel: 5, stride: 1, padding: 2)
        right1 = BranchSeparables(l, l, kernel: 3, stride: 1, padding: 1)
        left4 = BranchSeparables(r, r, kernel: 3, stride: 1, padding: 1)
        if first {
            path1 = PathConv(inLeft, outLeft)
            path2 = PathConv(inLeft, outLeft)
            finalPathBN = BatchNorm2d(2 * outLeft, eps: 1e-3)
        } else {
            convPrev = reluConvBN(inLeft, outLeft)
        }
    }

    /// - Parameters:
    ///   - x: the previous cell's output (read by `conv_1x1`).
    ///   - xPrev: the output of the cell before it.
    func callAsFunction(_ x: Tensor, _ xPrev: Tensor) -> Tensor {
        let left = convPrev.map { $0(xPrev) } ?? factorizedReduce(xPrev, path1!, path2!, finalPathBN!)
        let right = conv1x1(x)
        func avg(_ t: Tensor) -> Tensor { t.avgPool2d(kernel: (3, 3), stride: (1, 1), padding: (1, 1), countIncludePad: false) }
        let c0 = left0(right) + right0(left)
        let c1 = left1(left) + right1(left)
        let c2 = avg(right) + left
        let avgLeft = avg(left)
        let c3 = avgLeft + avgLeft
        let c4 = left4(right) + right
        return Tensor.concat([left, c0, c1, c2, c3, c4], axis: 1)
    }
}
