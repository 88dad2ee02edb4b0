import OpacityCore
import OpacityTensor

/// The paper's feature pyramid: P2..P5 from laterals of C2..C5 with a top-down path, P6
/// from C5 by a stride-2 3x3 convolution, P7 from ReLU(P6).
///
/// Names follow the reference (`P5_1`, `P5_2`, ..., `P6`, `P7_2`). The upsampled map is
/// taken from the merged sum before the 3x3 smoothing convolution. When an input size is
/// not a multiple of 32 the upsampled map is cropped to the lateral's size.
public final class FPN: Module, Neck {
    @Named("P5_1") var p5Lateral: Conv2d?
    @Named("P5_2") var p5Smooth: Conv2d?
    @Named("P4_1") var p4Lateral: Conv2d?
    @Named("P4_2") var p4Smooth: Conv2d?
    @Named("P3_1") var p3Lateral: Conv2d?
    @Named("P3_2") var p3Smooth: Conv2d?
    @Named("P2_1") var p2Lateral: Conv2d?
    @Named("P2_2") var p2Smooth: Conv2d?
    @Named("P6") var p6: Conv2d?
    @Named("P7_2") var p7: Conv2d?

    public let levels: ClosedRange<Int>
    public let outputSpec: FeatureSpec

    /// - Parameters:
    ///   - input: the encoder's C2..C5 (strides 4, 8, 16, 32).
    ///   - levels: a sub-range of 2...7 that must end at 5, 6 or 7 (e.g. 2-7, 3-7).
    ///   - channels: pyramid width (256 in the paper).
    public init(input: FeatureSpec, levels: ClosedRange<Int>, channels: Int) {
        self.levels = levels
        self.outputSpec = FeatureSpec(levels.map { FeatureLevel(channels: channels, stride: 1 << $0) })
        let c = input.channels
        let he = Initializer.heNormal(fanOut: true)
        func lateral(_ l: Int) -> Conv2d? {
            levels.contains(l) || (levels.lowerBound < l && l <= 5) ? Conv2d(c[l - 2], channels, kernel: 1, initializer: he) : nil
        }
        func smooth(_ l: Int) -> Conv2d? { levels.contains(l) ? Conv2d(channels, channels, kernel: 3, padding: 1, initializer: he) : nil }
        super.init()
        p5Lateral = lateral(5); p5Smooth = smooth(5)
        p4Lateral = lateral(4); p4Smooth = smooth(4)
        p3Lateral = lateral(3); p3Smooth = smooth(3)
        p2Lateral = lateral(2); p2Smooth = smooth(2)
        p6 = levels.contains(6) ? Conv2d(c[3], channels, kernel: 3, stride: 2, padding: 1, initializer: he) : nil
        p7 = levels.contains(7) ? Conv2d(channels, channels, kernel: 3, stride: 2, padding: 1, initializer: he) : nil
    }

    /// Crops `up` (`[N, C, 2h, 2w]`) to the lateral's spatial size.
    private func fit(_ up: Tensor, to lat: Tensor) -> Tensor {
        var u = up
        if u.shape[2] != lat.shape[2] { u = u.slice(axis: 2, 0..<lat.shape[2]) }
        if u.shape[3] != lat.shape[3] { u = u.slice(axis: 3, 0..<lat.shape[3]) }
        return u
    }

    public func pyramid(_ features: consuming [Tensor]) -> [Tensor] {
        precondition(features.count == 4, "FPN expects C2..C5, got \(features.count) maps")
        // Each encoder map is let go as soon as it is used, so that in inference C2..C4 do not
        // stay alive through the P2 convolutions, where a 512 px pass peaks (in training the
        // lateral convolutions keep their inputs for backward anyway).
        var maps: [Tensor?] = (consume features).map { $0 }
        var out: [Int: Tensor] = [:]
        // P6 and P7 first: they need C5 (the same values as in any order).
        if let p6 {
            let x6 = p6(maps[3]!)
            out[6] = x6
            if let p7 { out[7] = p7(x6.relu()) }
        }
        let laterals: [(Conv2d?, Conv2d?)] = [(p2Lateral, p2Smooth), (p3Lateral, p3Smooth), (p4Lateral, p4Smooth), (p5Lateral, p5Smooth)]
        var merged: Tensor?
        for l in stride(from: 5, through: 2, by: -1) {
            guard let lat = laterals[l - 2].0 else { break }
            let c = maps[l - 2]!
            maps[l - 2] = nil
            var m: Tensor
            if let above = merged, 2 * above.shape[2] == c.shape[2], 2 * above.shape[3] == c.shape[3] {
                // Sizes that halve exactly: the merge in one op, which in training leaves a
                // recipe instead of the merged map for the output convolution to keep.
                merged = nil
                m = lat(consume c, addingUpsampled2x: above)
            } else {
                m = lat(consume c)
                if let above = merged {
                    merged = nil
                    let up = fit(above.upsampleNearest2x(), to: m)
                    m = (consume m) + up  // in place (``Tensor/+(_:_:)``)
                }
            }
            merged = m
            if let smooth = laterals[l - 2].1 { out[l] = smooth(m) }
        }
        return levels.map { out[$0]! }
    }
}

/// Registers `neck/fpn`.
public enum FPNPlugin: OpacityPlugin {
    public static let name = "FPN"

    public static func register(into registry: inout Registry) throws {
        let info = ComponentInfo(
            kind: .neck, name: "fpn", plugin: name,
            summary: "feature pyramid P2..P7 (P6 from C5, P7 from ReLU(P6))",
            parameters: [ParameterSpec("channels", .int(1...2048), default: .int(256), "pyramid width")])
        try registry.registerNeck(info, NeckFactory(
            outputSpec: { cfg, input, levels in
                try check(input: input, levels: levels)
                return FeatureSpec(levels.map { FeatureLevel(channels: cfg.int("channels"), stride: 1 << $0) })
            },
            make: { cfg, input, levels in
                try check(input: input, levels: levels)
                return FPN(input: input, levels: levels, channels: cfg.int("channels"))
            }))
    }

    static func check(input: FeatureSpec, levels: ClosedRange<Int>) throws {
        guard input.strides == [4, 8, 16, 32] else {
            throw ConfigError.incompatible("neck fpn needs encoder maps at strides 4, 8, 16, 32 (C2..C5); the encoder gives \(input)")
        }
        guard levels.lowerBound >= 2, levels.upperBound <= 7, levels.upperBound >= 5 else {
            throw ConfigError.incompatible("neck fpn builds levels within 2-7 ending at 5, 6 or 7; got \(levels.lowerBound)-\(levels.upperBound)")
        }
    }
}
