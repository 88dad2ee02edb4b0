import Foundation

/// A convolution, a batch norm and an optional ReLU: the unit every encoder is built from,
/// with the batch norm's fused ReLU (``BatchNorm2d/callAsFunction(_:relu:)``) wherever the
/// activation follows the norm.
///
/// Three orders cover the published backbones:
/// - ``Order/convNormAct``: `act(norm(conv(x)))`, timm's `ConvNormAct`, ResNet's `conv1` +
///   `bn1`, DPN's stem;
/// - ``Order/actConvNorm``: `norm(conv(act(x)))`, NASNet's `ReLUConvBN` and separable branches;
/// - ``Order/normActConv``: `conv(act(norm(x)))`, the pre-activation unit of DPN
///   (`BnActConv2d`).
///
/// The convolution may be any layer: a ``Conv2d``, a separable convolution, or ``Identity``
/// for a norm and activation alone (DPN's `conv5_bn_ac`, see
/// ``normAct(_:eps:activation:keys:)``).
///
/// Checkpoint names come from ``Keys``: by default a level of its own with children `conv`
/// and `bn` (`conv1_1.conv.weight`, `conv1_1.bn.running_mean`); with
/// ``Keys/inline(conv:norm:)`` the convolution and norm are named as the parent's own
/// children (ResNet's `layer1.0.conv1.weight`, `layer1.0.bn1.weight`), so existing
/// checkpoints keep their names.
public final class ConvNormAct: Module, Layer {
    /// Where the activation sits relative to the convolution and the norm.
    public enum Order: Sendable {
        /// `act(norm(conv(x)))` (the norm and the ReLU fused).
        case convNormAct
        /// `norm(conv(act(x)))`.
        case actConvNorm
        /// `conv(act(norm(x)))` (the norm and the ReLU fused).
        case normActConv
    }

    /// The activation.
    public enum Activation: Sendable {
        /// No activation.
        case none
        /// `max(x, 0)`.
        case relu
    }

    /// The checkpoint names of the convolution and the norm.
    public struct Keys: Sendable, Equatable {
        /// The convolution's name.
        public var conv: String
        /// The norm's name.
        public var norm: String
        /// Whether the two are named as the parent's own children (no level of their own).
        public var isInline: Bool

        /// A level of its own with children `conv` and `norm` (default `conv`, `bn`, as timm).
        public static func nested(conv: String = "conv", norm: String = "bn") -> Keys { Keys(conv: conv, norm: norm, isInline: false) }
        /// No level of its own: the convolution and norm are the parent's children `conv`, `norm`.
        public static func inline(conv: String, norm: String) -> Keys { Keys(conv: conv, norm: norm, isInline: true) }
        /// `conv`, `bn` in a level of its own.
        public static let standard = nested()
    }

    /// The convolution (any layer: ``Conv2d``, a separable convolution, ``Identity``).
    public let conv: any Layer
    /// The batch norm, over the convolution's output channels (its input's for ``Order/normActConv``).
    public let norm: BatchNorm2d
    /// The activation.
    public let activation: Activation
    /// Where the activation sits.
    public let order: Order
    /// The checkpoint names.
    public let keys: Keys

    /// A unit from its parts.
    /// - Parameters:
    ///   - conv: the convolution (or another layer, e.g. a separable convolution).
    ///   - norm: the batch norm.
    ///   - activation: ReLU or none.
    ///   - order: where the activation sits.
    ///   - keys: the checkpoint names of `conv` and `norm`.
    public init(conv: any Layer, norm: BatchNorm2d, activation: Activation = .relu, order: Order = .convNormAct, keys: Keys = .standard) {
        precondition(keys.conv != keys.norm, "ConvNormAct: the convolution and the norm need different keys, got \(keys.conv) twice")
        self.conv = conv
        self.norm = norm
        self.activation = activation
        self.order = order
        self.keys = keys
        super.init()
        addsNoPathLevel = keys.isInline
    }

    /// A unit with a square ``Conv2d`` (no bias) and a batch norm over its output channels
    /// (over its input channels for ``Order/normActConv``).
    /// - Parameters:
    ///   - inChannels, outChannels: of the convolution.
    ///   - kernel, stride, padding, groups: of the convolution.
    ///   - eps: the batch norm's epsilon (PyTorch's 1e-5; 1e-3 in DPN and NASNet).
    ///   - activation, order, keys: as in ``init(conv:norm:activation:order:keys:)``.
    ///   - initializer: of the convolution's weight.
    public convenience init(_ inChannels: Int, _ outChannels: Int, kernel: Int, stride: Int = 1, padding: Int = 0, groups: Int = 1,
                            eps: Float = 1e-5, activation: Activation = .relu, order: Order = .convNormAct, keys: Keys = .standard,
                            initializer: Initializer = .heNormal(fanOut: true)) {
        let conv = Conv2d(inChannels, outChannels, kernel: kernel, stride: stride, padding: padding, groups: groups, bias: false,
                          initializer: initializer)
        let norm = BatchNorm2d(order == .normActConv ? inChannels : outChannels, eps: eps)
        self.init(conv: conv, norm: norm, activation: activation, order: order, keys: keys)
    }

    /// A batch norm and activation without a convolution (DPN's `conv5_bn_ac`: `bn` only).
    public static func normAct(_ channels: Int, eps: Float = 1e-5, activation: Activation = .relu, keys: Keys = .standard) -> ConvNormAct {
        ConvNormAct(conv: Identity(), norm: BatchNorm2d(channels, eps: eps), activation: activation, order: .normActConv, keys: keys)
    }

    /// The convolution and the norm under their keys, in the order they run (so a checkpoint
    /// lists them as the reference does: `bn` before `conv` in DPN's pre-activation units).
    /// A norm-only unit (``normAct(_:eps:activation:keys:)``) lists just its norm.
    override public func namedChildren() -> [(String, Module)] {
        if conv is Identity { return [(keys.norm, norm)] }
        return order == .normActConv ? [(keys.norm, norm), (keys.conv, conv)] : [(keys.conv, conv), (keys.norm, norm)]
    }

    /// Applies the unit to `[N, C, H, W]`; the norm and a following ReLU run as one pass
    /// (``BatchNorm2d/callAsFunction(_:relu:)``), and in training a convolution that consumes
    /// their output keeps the norm's recipe instead of the map (``SavedActivation``).
    public func callAsFunction(_ x: Tensor) -> Tensor {
        let relu = activation == .relu
        switch order {
        case .convNormAct: return norm(conv(x), relu: relu)
        case .actConvNorm: return norm(conv(relu ? x.relu() : x))
        case .normActConv: return conv(norm(x, relu: relu))
        }
    }
}
