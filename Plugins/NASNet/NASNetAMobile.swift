import OpacityCore
import OpacityTensor

/// NASNet-A-Mobile (4 @ 1056) as Cadene's `nasnetamobile` in `pretrainedmodels` (timm lacks
/// it), with its parameter names (`conv0.conv`, `cell_stem_0.comb_iter_0_left.separable_1.depthwise_conv2d`,
/// ..., `cell_15`, `last_linear`).
///
/// C2..C5 are, as in the paper's encoder, the outputs of `cell_stem_0` (44 channels,
/// stride 4), `cell_3` (264, stride 8), `cell_9` (528, stride 16) and `cell_15` (1056,
/// stride 32). The reference's own asymmetric paddings (zero-pad top-left, convolve or pool,
/// crop) already put every stage at exactly 1/4 ... 1/32 of a 512-pixel input, so no
/// "aligned" change is needed; the input size must be a multiple of 32 (the reference fails
/// on other sizes too).
public final class NASNetAMobile: Module, Encoder {
    /// The feature maps the encoder produces.
    public static let spec = FeatureSpec(zip([44, 264, 528, 1056], [4, 8, 16, 32]).map { FeatureLevel(channels: $0, stride: $1) })

    /// The input sizes at which C2..C5 are exactly `ceil(size / 4)` ... `ceil(size / 32)`:
    /// `size % 32` is 0 or 31. The unpadded stem gives `floor((size - 1) / 2)` pixels,
    /// `cell_stem_0` halves that rounding up (must give a multiple of 8), and each later
    /// reduction halves it again while its first cell's factorized path rounds up, so the two
    /// only agree on even sizes; any other size traps inside a cell (e.g. 100: 12x12 vs 13x13).
    public static let inputSizes = InputSizeRule.remainders([0, 31], modulo: 32, "multiples of 32 and one less, e.g. 96, 127, 128")

    /// The stem convolution (3x3, stride 2, no padding) and batch norm (`conv0.conv`, `conv0.bn`).
    public let conv0: ConvNormAct
    @Named("cell_stem_0") var cellStem0: ReductionCell
    @Named("cell_stem_1") var cellStem1: ReductionCell
    /// The twelve normal cells and the two reduction cells, in the reference's order and names.
    @Named(each: { NASNetAMobile.cellNames[$0] }) var cells: [any NASNetCell]
    /// The ImageNet classifier, present only when built with `classes > 0`.
    @Named("last_linear") public private(set) var lastLinear: Linear?
    /// C2..C5: 44, 264, 528, 1056 channels at strides 4, 8, 16, 32.
    public let featureSpec = NASNetAMobile.spec

    /// - Parameters:
    ///   - inChannels: input channels (1 for X-rays, 3 for ImageNet images).
    ///   - classes: size of the ImageNet classifier; 0 leaves it out.
    public init(inChannels: Int = 1, classes: Int = 0) {
        let stem = 32, f = 1056 / 24  // 44 filters
        conv0 = ConvNormAct(inChannels, stem, kernel: 3, stride: 2, eps: 1e-3, activation: .none, initializer: .pytorchDefault)
        let cellStem0 = ReductionCell(.stem0, inA: stem, inB: stem, filters: f / 4)
        let cellStem1 = ReductionCell(.stem1, inA: f, inB: stem, filters: f / 2)
        // (left in, left out, right in, right out); the first cell of a stage reads a map of
        // twice the size on its left and reduces it (FirstCell in the reference).
        let spec: [(Int, Int, Int, Int, Bool)] = [
            (f, f / 2, 2 * f, f, true), (2 * f, f, 6 * f, f, false), (6 * f, f, 6 * f, f, false), (6 * f, f, 6 * f, f, false),
            (6 * f, f, 8 * f, 2 * f, true), (8 * f, 2 * f, 12 * f, 2 * f, false), (12 * f, 2 * f, 12 * f, 2 * f, false),
            (12 * f, 2 * f, 12 * f, 2 * f, false),
            (12 * f, 2 * f, 16 * f, 4 * f, true), (16 * f, 4 * f, 24 * f, 4 * f, false), (24 * f, 4 * f, 24 * f, 4 * f, false),
            (24 * f, 4 * f, 24 * f, 4 * f, false),
        ]
        // built in this order (normal cells, then the reductions) so a seed gives the weights it gave
        var cells: [any NASNetCell] = spec.map { NormalCell(inLeft: $0.0, outLeft: $0.1, inRight: $0.2, outRight: $0.3, first: $0.4) }
        cells.insert(ReductionCell(.reduction, inA: 6 * f, inB: 6 * f, filters: 2 * f), at: 4)
        cells.insert(ReductionCell(.reduction, inA: 12 * f, inB: 12 * f, filters: 4 * f), at: 9)
        let lastLinear = classes > 0 ? Linear(24 * f, classes) : nil
        super.init()
        self.cellStem0 = cellStem0
        self.cellStem1 = cellStem1
        self.cells = cells
        self.lastLinear = lastLinear
    }

    /// Reference names in order: `cell_0` ... `cell_3`, `reduction_cell_0`, `cell_6` ... `cell_9`,
    /// `reduction_cell_1`, `cell_12` ... `cell_15`.
    static let cellNames = ["cell_0", "cell_1", "cell_2", "cell_3", "reduction_cell_0", "cell_6", "cell_7", "cell_8", "cell_9",
                            "reduction_cell_1", "cell_12", "cell_13", "cell_14", "cell_15"]

    /// C2..C5 for `[N, inChannels, H, W]` images (H and W multiples of 32):
    /// `[N, 44, H/4, W/4]` ... `[N, 1056, H/32, W/32]`.
    public func features(_ images: Tensor) -> [Tensor] {
        let x0 = conv0(images)
        let s0 = cellStem0(x0, x0)
        let s1 = cellStem1(s0, consume x0)  // freed here, not with the function's other locals
        var out = [s0]
        // Each cell reads the two previous maps: (x, xPrev).
        // a reduction cell's input is a pyramid level (C3, C4)
        var prev = s0, cur = s1
        for cell in cells {
            if cell is ReductionCell { out.append(cur) }
            let next = cell(cur, prev)
            prev = cur; cur = next
        }
        out.append(cur)
        return out
    }

    /// ``features(_:)`` in checkpoint segments (``GradientCheckpointing``): the stem
    /// convolution with `cell_stem_0`, `cell_stem_1`, then one segment per cell (each reads
    /// the two previous maps). Backward keeps the maps between cells and recomputes one cell
    /// at a time.
    public func checkpointedFeatures(_ images: Tensor) -> [Tensor] {
        let stem = Autograd.checkpoint([images]) { x in
            let x0 = self.conv0(x[0])
            return [x0, self.cellStem0(x0, x0)]
        }
        let (x0, s0) = (stem[0], stem[1])
        let s1 = Autograd.checkpoint([s0, x0]) { [self.cellStem1($0[0], $0[1])] }[0]
        var out = [s0]
        var prev = s0, cur = s1
        for cell in cells {
            if cell is ReductionCell { out.append(cur) }
            let next = Autograd.checkpoint([cur, prev]) { [cell($0[0], $0[1])] }[0]
            prev = cur; cur = next
        }
        out.append(cur)
        return out
    }

    /// ImageNet logits `[N, classes]` from C5 (ReLU, global average pool, `last_linear`).
    public func logits(fromDeepest c5: Tensor) -> Tensor {
        guard let lastLinear else { preconditionFailure("NASNetAMobile.logits: built without a classifier (classes: 0)") }
        return lastLinear(c5.relu().globalAvgPool2d().flattened())
    }

    /// ImageNet logits `[N, classes]` for `[N, inChannels, H, W]` images (only with a classifier).
    public func classify(_ images: Tensor) -> Tensor { logits(fromDeepest: features(images)[3]) }
}
