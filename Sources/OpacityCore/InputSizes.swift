/// The square input sizes an encoder accepts: those at which every feature map it returns
/// is exactly `ceil(size / stride)` pixels, the grid the anchors and the neck assume.
///
/// Part of the backbone contract, registered with the encoder (``EncoderFactory/inputSizes``);
/// a detector refuses any other size before allocating anything (as Detectron2's backbones
/// declare their size divisibility). Other sizes would crash inside the encoder (NASNet's
/// cells cannot add maps of 12 and 13 pixels) or give maps that do not fit the anchors.
public struct InputSizeRule: Sendable, CustomStringConvertible {
    /// The rule in words, e.g. `multiples of 32 and one less`.
    public var description: String
    /// Whether a square input of this many pixels gives maps of exactly `ceil(size / stride)`.
    public var accepts: @Sendable (Int) -> Bool

    /// - Parameters:
    ///   - description: the rule in words, for error messages and `opacity plugins`.
    ///   - accepts: the predicate, for positive sizes.
    public init(_ description: String, accepts: @escaping @Sendable (Int) -> Bool) {
        self.description = description
        self.accepts = accepts
    }

    /// Every positive size (padded stride-2 stages: each map is `ceil(size / stride)`).
    public static let any = InputSizeRule("any size") { $0 >= 1 }

    /// Sizes whose remainder modulo `modulus` is one of `remainders`, e.g. remainders
    /// `[0, 31]` modulo 32: multiples of 32 and one less.
    /// - Parameters:
    ///   - remainders: accepted values of `size % modulus`.
    ///   - modulus: a positive integer.
    ///   - description: the rule in words.
    public static func remainders(_ remainders: Set<Int>, modulo modulus: Int, _ description: String) -> InputSizeRule {
        precondition(modulus > 0, "InputSizeRule.remainders: modulus must be positive, got \(modulus)")
        return InputSizeRule(description) { $0 >= 1 && remainders.contains($0 % modulus) }
    }

    /// The accepted size nearest to `size` within `range` that also passes `also` (the
    /// smaller one on a tie), or nil when none does.
    public func nearest(to size: Int, in range: ClosedRange<Int>, also: (Int) -> Bool = { _ in true }) -> Int? {
        func ok(_ s: Int) -> Bool { range.contains(s) && accepts(s) && also(s) }
        var d = 0
        while size - d >= range.lowerBound || size + d <= range.upperBound {
            if ok(size - d) { return size - d }
            if ok(size + d) { return size + d }
            d += 1
        }
        return nil
    }
}
