import Foundation
import OpacityCore
import OpacityTensor

/// Four 3x3 convolutions with ReLU and an output convolution, shared across pyramid levels
/// (names `conv1`..`conv4`, `output`).
public final class Subnet: Module {
    public let conv1: Conv2d, conv2: Conv2d, conv3: Conv2d, conv4: Conv2d
    public let output: Conv2d
    let dropout: Dropout?

    init(inChannels: Int, channels: Int, outputs: Int, dropout: Float, outputBias: Float) {
        let he = Initializer.heNormal(fanOut: true)
        conv1 = Conv2d(inChannels, channels, kernel: 3, padding: 1, initializer: he)
        conv2 = Conv2d(channels, channels, kernel: 3, padding: 1, initializer: he)
        conv3 = Conv2d(channels, channels, kernel: 3, padding: 1, initializer: he)
        conv4 = Conv2d(channels, channels, kernel: 3, padding: 1, initializer: he)
        output = Conv2d(channels, outputs, kernel: 3, padding: 1, initializer: .zeros)
        output.bias?.value = Tensor(shape: [outputs], repeating: outputBias)
        self.dropout = dropout > 0 ? Dropout(dropout) : nil
    }

    /// `[N, C, H, W]` -> `[N, H*W*A, outputs/A]`.
    func callAsFunction(_ x: Tensor, perAnchor k: Int) -> Tensor {
        callAsFunction(levels: [x], perAnchor: k)[0]
    }

    /// Each level `[N, C, H_l, W_l]` -> `[N, H_l*W_l*A, outputs/A]`.
    ///
    /// While a graph is recorded (training), layer by layer: each convolution runs on every
    /// level before the next one starts, so that its weight's kernel transforms are computed
    /// once for all levels (forward and backward) and kept only while they are used
    /// (``TensorMemory/derivedCacheLimitBytes``). Otherwise (inference), level by level: each
    /// level's four convolutions run before the next level starts, so that the other levels'
    /// intermediate maps are not alive beside the largest level's (resnet152 at 512 px: P3-P7's
    /// 5.3 MiB at P2's peak), and the last three write over their input where a kernel can
    /// (``Conv2d/inPlace(_:)``). Either order gives the same values, bit for bit (each level's
    /// convolutions are independent of the others'; dropout draws its masks in level order
    /// after all of them).
    func callAsFunction(levels: [Tensor], perAnchor k: Int) -> [Tensor] {
        var ys = levels
        let convs = [conv1, conv2, conv3, conv4]
        if Autograd.isRecording {
            for conv in convs {
                // Level by level in place: each level's input is dropped as soon as its output
                // exists, rather than all inputs living until the whole layer is done.
                for i in ys.indices { ys[i] = conv(ys[i]).relu() }
            }
        } else {
            ys = levels.map { level in
                // The first convolution reads the pyramid's map, which the other subnet
                // reads too; the next ones may write over their input (``Conv2d/inPlace(_:)``).
                var x = conv1(level).relu()
                for conv in convs.dropFirst() { x = conv.inPlace(consume x).relu() }
                return x
            }
        }
        if let dropout { ys = ys.map { dropout($0) } }
        return ys.map { x in
            let y = output(x)
            let n = y.shape[0]
            return y.permuted([0, 2, 3, 1]).reshaped([n, -1, k])
        }
    }
}

/// The paper's global image classifier on the encoder's deepest map: 2x2 max pool, 3x3
/// convolution without padding, ReLU, concatenated global average and max pool, dropout,
/// linear to 3 classes, log-softmax.
///
/// A pooled map smaller than 3x3 (tiny inputs) is zero-padded to 3x3 first.
public final class GlobalClassifier: Module {
    public let conv: Conv2d
    public let fc: Linear
    let dropout: Dropout?

    init(inChannels: Int, channels: Int, dropout: Float, classes: Int = 3) {
        conv = Conv2d(inChannels, channels, kernel: 3, initializer: .heNormal(fanOut: true))
        fc = Linear(2 * channels, classes)
        self.dropout = dropout > 0 ? Dropout(dropout) : nil
    }

    /// `[N, C, H, W]` -> `[N, 3]` log-probabilities.
    func callAsFunction(_ c5: Tensor) -> Tensor {
        var x = c5.shape[2] >= 2 && c5.shape[3] >= 2 ? c5.maxPool2d(kernel: (2, 2)) : c5
        let ph = max(0, 3 - x.shape[2]), pw = max(0, 3 - x.shape[3])
        if ph > 0 || pw > 0 { x = x.padded2d(left: pw / 2, right: pw - pw / 2, top: ph / 2, bottom: ph - ph / 2) }
        x = conv(x).relu()
        var f = Tensor.concat([x.globalAvgPool2d(), x.globalMaxPool2d()], axis: 1).flattened()
        if let dropout { f = dropout(f) }
        return fc(f).logSoftmax()
    }
}

/// The RetinaNet head with the paper's changes: dropout before the classification output
/// and an optional global 3-class classifier.
public final class RetinaHead: Module, Head {
    public let regressionModel: Subnet
    public let classificationModel: Subnet
    public let globalClassificationModel: GlobalClassifier?
    public let anchorsPerLocation: Int
    public let classes: Int

    public init(context: HeadContext, channels: Int, prior: Float) {
        let cin = context.pyramid.levels[0].channels
        anchorsPerLocation = context.anchorsPerLocation
        classes = context.classes
        regressionModel = Subnet(inChannels: cin, channels: channels, outputs: context.anchorsPerLocation * 4, dropout: 0, outputBias: 0)
        classificationModel = Subnet(inChannels: cin, channels: channels, outputs: context.anchorsPerLocation * context.classes,
                                     dropout: context.dropout, outputBias: -Foundation.log((1 - prior) / prior))
        globalClassificationModel = context.globalDropout.map {
            GlobalClassifier(inChannels: context.deepest.channels, channels: channels, dropout: $0)
        }
    }

    /// ``predict(pyramid:deepest:)`` with each level of the classification subnet as one
    /// checkpoint segment (``GradientCheckpointing``): backward keeps the pyramid and the
    /// outputs and recomputes one level's four convolutions at a time. The regression subnet
    /// and the global classifier are not recomputed: backward is done with them before the
    /// first classification segment runs again, where training peaks. The same values and
    /// gradients; the dropout draws the same masks in the same order.
    public func checkpointedPredict(pyramid: [Tensor], deepest: Tensor) -> HeadOutput {
        let classes = self.classes
        let cls = Tensor.concat(pyramid.map { level in
            Autograd.checkpoint(level) { [classificationModel] in classificationModel(levels: [$0], perAnchor: classes)[0] }
        }, axis: 1)
        // The regression subnet keeps its maps: the loss adds its term after the focal term, so
        // backward walks the regression subnet first and its maps are gone before the first
        // classification segment is recomputed, where the step peaks. Recomputing it too cost
        // 5-15% more step time for a peak 10 MiB higher (resnet34, 512 px).
        let reg = Tensor.concat(regressionModel(levels: pyramid, perAnchor: 4), axis: 1)
        return HeadOutput(classLogits: cls, boxDeltas: reg, globalLogProbs: globalClassificationModel?(deepest))
    }

    /// Two stages: the classification subnet on every level, then the regression subnet on
    /// every level with the global classifier. A training step then frees the classification
    /// subnet's maps before the regression subnet's exist. The same values as
    /// ``predict(pyramid:deepest:)``; the dropout draws the same masks in the same order.
    public func trainingStages(pyramid: [Tensor], deepest: Tensor) -> [HeadStage] {
        let n = deepest.shape[0], a = anchorsPerLocation, classes = self.classes
        let rows = pyramid.map { $0.shape[2] * $0.shape[3] * a }
        let levels = Array(pyramid.indices)
        let cls = HeadStage(pieces: levels.map { HeadStage.Piece(.classLogits, level: $0) }, shapes: rows.map { [n, $0, classes] }) {
            [classificationModel] p, _ in classificationModel(levels: p, perAnchor: classes)
        }
        var pieces = levels.map { HeadStage.Piece(.boxDeltas, level: $0) }
        var shapes = rows.map { [n, $0, 4] }
        if globalClassificationModel != nil {
            pieces.append(HeadStage.Piece(.globalLogProbs))
            shapes.append([n, 3])
        }
        let reg = HeadStage(pieces: pieces, shapes: shapes) { [regressionModel, globalClassificationModel] p, d in
            regressionModel(levels: p, perAnchor: 4) + (globalClassificationModel.map { [$0(d)] } ?? [])
        }
        return [cls, reg]
    }

    public func predict(pyramid: [Tensor], deepest: Tensor) -> HeadOutput {
        let cls = Tensor.concat(classificationModel(levels: pyramid, perAnchor: classes), axis: 1)
        let reg = Tensor.concat(regressionModel(levels: pyramid, perAnchor: 4), axis: 1)
        return HeadOutput(classLogits: cls, boxDeltas: reg, globalLogProbs: globalClassificationModel?(deepest))
    }
}
