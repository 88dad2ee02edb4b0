import Foundation
import OpacityCore
import OpacityTensor

/// Registers `detector/retinanet` and `head/retina`.
public enum RetinaNetPlugin: OpacityPlugin {
    public static let name = "RetinaNet"

    /// The input sizes the `size` parameter admits before the encoder's own rule. Any size in
    /// it works with every pyramid level (each map is `ceil(size / stride)`, as the anchors).
    static let sizeRange = 32...2048

    /// The detector's parameters, with the paper's values as defaults.
    public static let detectorParameters: [ParameterSpec] = [
        ParameterSpec("encoder", .component(.encoder), default: .string("resnet34"), "image encoder (C2..C5)"),
        ParameterSpec("neck", .component(.neck), default: .string("fpn"), "feature pyramid"),
        ParameterSpec("head", .component(.head), default: .string("retina"), "per-anchor subnets"),
        ParameterSpec("size", .int(sizeRange), default: .int(512), "square input size in pixels"),
        ParameterSpec("levels", .range(within: 2...7), default: .range(2...7), "pyramid levels (2-7 adds the paper's small-anchor P2; 3-7 is stock)"),
        ParameterSpec("dropout", .float(0...0.95), default: .float(0.5), "dropout before the box-classification output"),
        ParameterSpec("global", .bool, default: .bool(true), "global 3-class classifier on the encoder's deepest map"),
        ParameterSpec("global_dropout", .float(0...0.95), default: .float(0.5), "dropout in the global classifier"),
        ParameterSpec("global_weight", .float(0...100), default: .float(0.1), "weight of the global NLL in the total loss"),
        ParameterSpec("alpha", .float(0...1), default: .float(0.25), "focal loss alpha"),
        ParameterSpec("gamma", .float(0...10), default: .float(2), "focal loss gamma"),
        ParameterSpec("positive_iou", .float(0...1), default: .float(0.5), "anchor IoU at or above which it is positive"),
        ParameterSpec("negative_iou", .float(0...1), default: .float(0.4), "anchor IoU below which it is negative"),
        ParameterSpec("beta", .float(0...10), default: .float(1.0 / 9), "smooth-L1 beta"),
        ParameterSpec("candidate_score", .float(0...1), default: .float(0.025), "score an anchor needs to enter NMS"),
        ParameterSpec("nms", .float(0...1), default: .float(0.05), "class-agnostic NMS IoU"),
        ParameterSpec("shrink", .float(0.1...2), default: .float(1), "scale boxes about their centre after NMS (0.875 in the paper)"),
        ParameterSpec("grad_checkpointing", .string(choices: GradientCheckpointing.allCases.map(\.rawValue)), default: .string("none"),
                      "training only: recompute these parts' activations in backward instead of keeping them (none, head, encoder, all): less memory, a longer step"),
    ]

    public static func register(into registry: inout Registry) throws {
        try registry.registerHead(
            ComponentInfo(kind: .head, name: "retina", plugin: name,
                          summary: "RetinaNet classification and regression subnets (+ global classifier)",
                          parameters: [
                            ParameterSpec("channels", .int(1...2048), default: .int(256), "subnet width"),
                            ParameterSpec("prior", .float(0.0001...0.5), default: .float(0.01), "initial foreground probability"),
                          ]),
            HeadFactory(
                check: { cfg, ctx in
                    let c = Set(ctx.pyramid.channels)
                    guard c.count == 1 else {
                        throw ConfigError.incompatible("head retina shares its subnets across levels, so every pyramid level needs the same channels; the neck gives \(ctx.pyramid)")
                    }
                },
                make: { cfg, ctx in RetinaHead(context: ctx, channels: cfg.int("channels"), prior: cfg.float("prior")) }))

        try registry.registerDetector(
            ComponentInfo(kind: .detector, name: "retinanet", plugin: name,
                          summary: "RetinaNet with the paper's changes (P2 level, global classifier, dropout)",
                          parameters: detectorParameters),
            DetectorFactory(
                check: { cfg, reg in _ = try plan(cfg, reg) },
                make: { cfg, reg in
                    let p = try plan(cfg, reg)
                    let encoder = try p.encoderFactory.make(p.encoderConfig)
                    guard encoder.featureSpec == p.encoderSpec else {
                        throw ConfigError.incompatible("encoder \(p.encoderConfig) built maps \(encoder.featureSpec) but declared \(p.encoderSpec)")
                    }
                    let neck = try p.neckFactory.make(p.neckConfig, p.encoderSpec, p.levels)
                    let head = try p.headFactory.make(p.headConfig, p.headContext)
                    let loss = RetinaLoss(
                        alpha: cfg.float("alpha"), gamma: cfg.float("gamma"),
                        matcher: AnchorMatcher(positiveIoU: cfg.float("positive_iou"), negativeIoU: cfg.float("negative_iou")),
                        beta: cfg.float("beta"), globalWeight: cfg.float("global_weight"))
                    let post = RetinaPostprocessor(candidateScore: cfg.float("candidate_score"), nmsIoU: cfg.float("nms"),
                                                   shrink: cfg.float("shrink"))
                    return Detector(config: cfg.canonical.description, encoder: encoder, neck: neck, head: head, loss: loss,
                                    postprocessor: post, anchors: AnchorGenerator(levels: p.levels), inputSize: cfg.int("size"),
                                    gradientCheckpointing: GradientCheckpointing(rawValue: cfg.string("grad_checkpointing")) ?? .none)
                }))
    }

    struct Plan {
        var encoderConfig: ResolvedConfig, encoderFactory: EncoderFactory, encoderSpec: FeatureSpec
        var neckConfig: ResolvedConfig, neckFactory: NeckFactory, pyramid: FeatureSpec
        var headConfig: ResolvedConfig, headFactory: HeadFactory, headContext: HeadContext
        var levels: ClosedRange<Int>
    }

    /// Checks encoder against neck against head from the config alone.
    static func plan(_ cfg: ResolvedConfig, _ reg: Registry) throws -> Plan {
        let levels = cfg.range("levels")
        guard cfg.float("negative_iou") <= cfg.float("positive_iou") else {
            throw ConfigError.invalidValue(component: "retinanet", key: "negative_iou", value: "\(cfg.float("negative_iou"))",
                                           expected: "a value not above positive_iou (\(cfg.float("positive_iou")))")
        }
        // No size rule of the detector's own: every level's map is ceil(size / 2^L) at any size
        // the key admits (a 100 px input gives P6 2x2 and P7 1x1, P7's stride being 128), the
        // grid the anchors use (PyramidGridTests); only the encoder may refuse a size.
        let size = cfg.int("size")
        let ec = cfg.component("encoder"), ef = try reg.encoderFactory(ec.name)
        // the backbone contract: refuse a size the encoder cannot take, before allocating
        guard ef.inputSizes.accepts(size) else {
            let nearest = ef.inputSizes.nearest(to: size, in: sizeRange)
            throw ConfigError.invalidValue(
                component: "retinanet", key: "size", value: "\(size)",
                expected: "a size encoder \(ec.canonical) accepts (\(ef.inputSizes))" + (nearest.map { "; nearest valid size: \($0)" } ?? ""))
        }
        let espec = try ef.featureSpec(ec)
        let nc = cfg.component("neck"), nf = try reg.neckFactory(nc.name)
        let pyramid: FeatureSpec
        do { pyramid = try nf.outputSpec(nc, espec, levels) } catch let e as ConfigError {
            throw ConfigError.incompatible("encoder \(ec.canonical) does not fit neck \(nc.canonical): \(e)")
        }
        guard pyramid.strides == levels.map({ 1 << $0 }) else {
            throw ConfigError.incompatible("neck \(nc.canonical) gives strides \(pyramid.strides) but levels \(levels.lowerBound)-\(levels.upperBound) need \(levels.map { 1 << $0 })")
        }
        let hc = cfg.component("head"), hf = try reg.headFactory(hc.name)
        let ctx = HeadContext(pyramid: pyramid, deepest: espec.levels[espec.levels.count - 1],
                              anchorsPerLocation: AnchorGenerator(levels: levels).perLocation, classes: 1,
                              dropout: cfg.float("dropout"), globalDropout: cfg.bool("global") ? cfg.float("global_dropout") : nil)
        do { try hf.check(hc, ctx) } catch let e as ConfigError {
            throw ConfigError.incompatible("neck \(nc.canonical) does not fit head \(hc.canonical): \(e)")
        }
        return Plan(encoderConfig: ec, encoderFactory: ef, encoderSpec: espec, neckConfig: nc, neckFactory: nf, pyramid: pyramid,
                    headConfig: hc, headFactory: hf, headContext: ctx, levels: levels)
    }
}
