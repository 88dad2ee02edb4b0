/// A small, fast, seedable random number generator (xoshiro256**, seeded by SplitMix64).
///
/// The same seed gives the same sequence on every machine; Opacity derives every random
/// choice (weights, dropout masks, augmentations, fold splits) from one of these, so a run
/// repeats exactly for a seed.
public struct RandomGenerator: RandomNumberGenerator, Sendable {
    private var s0, s1, s2, s3: UInt64
    private var spareNormal: Float?

    /// A generator whose whole sequence is fixed by `seed`.
    public init(seed: UInt64) {
        var x = seed
        func splitmix() -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s0 = splitmix(); s1 = splitmix(); s2 = splitmix(); s3 = splitmix()
    }

    /// A generator for a sub-stream, e.g. one per sample: the same `(seed, stream)` pair
    /// always gives the same sequence, and different streams are independent.
    public init(seed: UInt64, stream: UInt64) {
        self.init(seed: seed ^ (stream &* 0xD1B5_4A32_D192_ED03) &+ 0x632B_E59B_D9B4_E019)
    }

    @inline(__always)
    private static func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }

    /// The next 64 random bits.
    @inline(__always)
    public mutating func next() -> UInt64 {
        let result = RandomGenerator.rotl(s1 &* 5, 7) &* 9
        let t = s1 << 17
        s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3
        s2 ^= t
        s3 = RandomGenerator.rotl(s3, 45)
        return result
    }

    /// A uniform value in `[0, 1)` with 24 random bits.
    @inline(__always)
    public mutating func nextUniform() -> Float { Float(next() >> 40) * (1.0 / 16_777_216.0) }

    /// A uniform value in `[lo, hi)`.
    @inline(__always)
    public mutating func uniform(_ lo: Float, _ hi: Float) -> Float { lo + (hi - lo) * nextUniform() }

    /// A uniform `Double` in `[0, 1)` with 53 random bits.
    public mutating func nextDouble() -> Double { Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0) }

    /// A standard normal value (Box-Muller, pairs cached).
    public mutating func nextNormal() -> Float {
        if let s = spareNormal {
            spareNormal = nil
            return s
        }
        var u1 = nextDouble()
        while u1 <= 1e-300 { u1 = nextDouble() }
        let u2 = nextDouble()
        let r = (-2 * _log(u1)).squareRoot()
        let a = 2 * Double.pi * u2
        spareNormal = Float(r * _sin(a))
        return Float(r * _cos(a))
    }

    /// A normal value with the given mean and standard deviation.
    public mutating func normal(mean: Float = 0, std: Float = 1) -> Float { mean + std * nextNormal() }

    /// An integer uniform in `0..<upperBound`.
    public mutating func nextInt(_ upperBound: Int) -> Int { Int.random(in: 0..<upperBound, using: &self) }
}

import Foundation
@inline(__always) func _log(_ x: Double) -> Double { Foundation.log(x) }
@inline(__always) func _sin(_ x: Double) -> Double { Foundation.sin(x) }
@inline(__always) func _cos(_ x: Double) -> Double { Foundation.cos(x) }

extension Tensor {
    /// A tensor of normal values.
    public static func randomNormal(_ shape: [Int], mean: Float = 0, std: Float = 1, using rng: inout RandomGenerator) -> Tensor {
        var t = Tensor(uninitializedShape: shape)
        let p = t.mutablePointer
        for i in 0..<t.count { p[i] = rng.normal(mean: mean, std: std) }
        t.node = nil
        return t
    }

    /// A tensor of uniform values in `[lo, hi)`.
    public static func randomUniform(_ shape: [Int], _ lo: Float = 0, _ hi: Float = 1, using rng: inout RandomGenerator) -> Tensor {
        let t = Tensor(uninitializedShape: shape)
        let p = t.mutablePointer
        for i in 0..<t.count { p[i] = rng.uniform(lo, hi) }
        return t
    }
}
