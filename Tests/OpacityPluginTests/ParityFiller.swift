import Foundation
import Opacity

/// The parity weight filler: every tensor from a formula of its name and element index.
///
/// Swift twin of `scripts/parity/filler.py`, which documents the formula; both give
/// bit-identical float32 values (checked against `Fixtures/parity/filler.json`).
enum ParityFiller {
    static func fnv1a32(_ text: String) -> UInt32 {
        var h: UInt32 = 0x811C_9DC5
        for b in text.utf8 { h = (h ^ UInt32(b)) &* 0x0100_0193 }
        return h
    }

    static func fnv1a64(_ text: String) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for b in text.utf8 { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
        return h
    }

    /// `u` in [0, 1) for element `i` of the tensor whose name hashes to `h`.
    @inline(__always)
    static func uniform(_ h: UInt32, _ i: Int) -> Double {
        var x = h &+ UInt32(truncatingIfNeeded: i) &* 0x9E37_79B1
        x ^= x >> 16
        x = x &* 0x85EB_CA6B
        x ^= x >> 13
        x = x &* 0xC2B2_AE35
        x ^= x >> 16
        return Double(x >> 8) / 16_777_216
    }

    /// The filler's values for a tensor, or `nil` when the filler leaves it alone.
    static func values(_ name: String, shape: [Int]) -> [Float]? {
        let count = shape.reduce(1, *)
        let h = fnv1a32(name)
        let rule: (Double) -> Double
        if name.hasSuffix(".weight") && shape.count >= 2 {
            let scale = (3.0 / Double(shape[1...].reduce(1, *))).squareRoot()
            rule = { $0 * scale }
        } else if name.hasSuffix(".weight") {
            rule = { 0.75 + 0.25 * $0 }
        } else if name.hasSuffix(".bias") || name.hasSuffix(".running_mean") {
            rule = { 0.1 * $0 }
        } else if name.hasSuffix(".running_var") {
            rule = { 1.0 + 0.5 * $0 }
        } else {
            return nil
        }
        var out = [Float](repeating: 0, count: count)
        for i in 0..<count { out[i] = Float(rule(2 * uniform(h, i) - 1)) }
        return out
    }

    /// The reference's shape for one of our tensors: a one-channel stem is three channels there.
    static func referenceShape(_ name: String, _ shape: [Int], stem: String) -> [Int] {
        name == stem && shape.count == 4 && shape[1] == 1 ? [shape[0], 3, shape[2], shape[3]] : shape
    }

    /// Fills every parameter and batch-norm statistic of `module`.
    ///
    /// A one-channel `stem` weight gets the reference's three-channel values summed over the
    /// input channels (the reference sees the grey image three times).
    static func fill(_ module: Module, stem: String) throws {
        var state: [String: Tensor] = [:]
        for (name, t) in module.stateDict() {
            let ref = referenceShape(name, t.shape, stem: stem)
            guard var v = values(name, shape: ref) else { continue }
            if ref != t.shape {
                let (o, k) = (ref[0], ref[2] * ref[3])
                v = (0..<(o * k)).map { j in
                    let (oc, p) = (j / k, j % k)
                    return Float((0..<3).reduce(0.0) { $0 + Double(v[(oc * 3 + $1) * k + p]) })
                }
            }
            state[name] = Tensor(shape: t.shape, scalars: v)
        }
        try module.load(state, options: .strict)
    }

    /// `name:d0xd1x...` for every tensor the filler sets, in the reference's shapes, sorted.
    static func stateLines(_ module: Module, stem: String) -> [String] {
        module.stateDict().compactMap { name, t -> String? in
            guard values(name, shape: [1]) != nil else { return nil }
            return name + ":" + referenceShape(name, t.shape, stem: stem).map(String.init).joined(separator: "x")
        }.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
    }

    /// The fixed input batch `[N, 1, H, W]`, pixels in [0, 1).
    static func image(_ shape: [Int]) -> Tensor {
        let h = fnv1a32("input")
        return Tensor(shape: shape, scalars: (0..<shape.reduce(1, *)).map { Float(uniform(h, $0)) })
    }
}
