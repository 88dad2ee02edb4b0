import Foundation

/// A trainable tensor owned by a module.
///
/// Reading ``tensor`` inside a recorded computation connects the parameter to the graph;
/// ``Tensor/backward(_:)`` accumulates into ``grad`` until ``zeroGrad()``.
public final class Parameter: @unchecked Sendable {
    /// The current value.
    public var value: Tensor {
        didSet {
            // a probe build past its limit made this parameter with no elements
            // (``Initializer/shapeProbe(limit:_:)``); a layer may still set its (small) value
            shapeCheck(value.shape == leaf.shape || (leaf.shape.elementCount == 0 && Initializer.probing),
                       "Parameter", "new value \(describe(value.shape)) for parameter of shape \(describe(leaf.shape))")
            leaf = GradNode(leafShape: value.shape, parameter: self)
        }
    }
    /// The accumulated gradient, or `nil` before the first backward pass.
    public var grad: Tensor?
    /// Whether the optimizer updates this parameter and gradients reach it.
    public var requiresGrad = true
    private var leaf: GradNode

    /// A parameter holding `value` (detached from any graph).
    public init(_ value: Tensor) {
        self.value = value.detached()
        self.leaf = GradNode(leafShape: value.shape)
        self.leaf.parameter = self
    }

    /// The value as a tracked tensor (when recording and `requiresGrad`). Inside a checkpoint
    /// segment (``Autograd/checkpoint(_:_:)``) the segment notes the parameter and hands out
    /// its own leaf, so that the gradient reaches ``grad`` through the segment.
    public var tensor: Tensor {
        guard requiresGrad else { return value }
        if let segment = Autograd.segment { return segment.tensor(for: self) }
        guard Autograd.isRecording else { return value }
        return value.withNode(leaf)
    }

    /// The shape of the value.
    public var shape: [Int] { value.shape }

    func accumulateGrad(_ g: Tensor) {
        if grad == nil { grad = g.detached() } else { grad!.addInPlace(g) }
    }

    /// Drops the accumulated gradient.
    public func zeroGrad() { grad = nil }
}

/// A non-trainable tensor saved with a module (e.g. batch-norm running statistics).
public final class Buffer: @unchecked Sendable {
    /// The current value.
    public var value: Tensor
    /// A buffer holding `value`.
    public init(_ value: Tensor) { self.value = value }
}

/// Gives a child module, parameter, buffer or module array a checkpoint name that differs
/// from its Swift property name. This is the one way a module names its children on disk.
///
/// Declare the child without a value and assign it in `init`, as any stored property:
///
/// ```swift
/// final class Block: Module, Layer {
///     let conv1: Conv2d                                   // saved as `conv1`
///     @Named("se_module") var squeeze: SEModule            // saved as `se_module`
///     @Named("c1x1_w_s2") var projection: Conv2d?          // optional: `nil` until assigned
///     @Named(each: { "block\($0 + 1)" }) var blocks: [Block2]  // block1, block2, ...
///
///     init(_ c: Int) {
///         conv1 = Conv2d(c, c, kernel: 3, padding: 1)
///         super.init()                                    // then the @Named children:
///         squeeze = SEModule(c, reduction: 16)
///         blocks = [Block2(c), Block2(c)]
///     }
/// }
/// ```
///
/// Swift runs the attribute's arguments as the property's initial value (SE-0258), so a
/// wrapped property is initialised storage and assigning it is a setter call, which a class
/// allows after `super.init()`. To assign before `super.init()`, write to the storage:
/// `_squeeze.wrappedValue = SEModule(...)`. Reading a non-optional child before it is
/// assigned, or listing the module's children while one is unassigned, stops the program with
/// a message naming the key (a child that is never assigned would otherwise be silently
/// neither saved nor trained).
///
/// - A plain key renames the property: a module array `@Named("features") var f: [M]` is
///   saved as `features.0`, `features.1`, ...
/// - `each:` names element `i` of a module array `each(i)`, with no common prefix (Xception's
///   `block1` ... `block12`, DPN's `conv2_1` ... `conv2_3`, NASNet's `cell_0` ...
///   `reduction_cell_0` ...); the names must differ.
@propertyWrapper
public struct Named<Value> {
    /// The name on disk (for `each:`, the first element's, for messages).
    public let key: String
    /// The name of element `i` of a module array, when given with `each:`.
    public let elementKey: ((Int) -> String)?
    private var value: Value?

    /// The child, parameter or buffer.
    public var wrappedValue: Value {
        get {
            guard let value else { preconditionFailure("@Named(\"\(key)\"): read before it was assigned (assign it in init)") }
            return value
        }
        set { value = newValue }
    }

    /// Names `wrappedValue` `key` in parameter paths (a declaration with an initial value).
    public init(wrappedValue: Value, _ key: String) {
        self.key = key
        self.elementKey = nil
        self.value = wrappedValue
    }

    /// Names the child `key`; assign it in `init` (a declaration without a value).
    public init(_ key: String) {
        self.key = key
        self.elementKey = nil
        self.value = nil
    }

    /// Names element `i` of a module array `each(i)`; assign the array in `init`.
    public init(each: @escaping (Int) -> String) {
        self.key = each(0)
        self.elementKey = each
        self.value = nil
    }

    /// Names element `i` of a module array `each(i)` (a declaration with an initial value).
    public init(wrappedValue: Value, each: @escaping (Int) -> String) {
        self.init(each: each)
        self.value = wrappedValue
    }
}

extension Named where Value: ExpressibleByNilLiteral {
    /// Names an optional child `key`; it is `nil` (saved as nothing) until assigned.
    public init(_ key: String) {
        self.key = key
        self.elementKey = nil
        self.value = .some(nil)
    }
}

protocol NamedValue {
    var key: String { get }
    var elementKey: ((Int) -> String)? { get }
    var anyValue: Any? { get }
}

extension Named: NamedValue {
    var anyValue: Any? { value.map { $0 as Any } }
}

/// The base class of layers and models.
///
/// Children, parameters and buffers are found by reflection over stored properties, in
/// declaration order; their names join with dots into paths that equal PyTorch
/// `state_dict` keys (`layer1.0.conv1.weight`). Arrays of modules are numbered. A property
/// is renamed on disk with ``Named``, which is the one way to name children: a plugin
/// never lists its children by hand. (The engine's containers, such as ``Sequential``,
/// override ``namedChildren()``.) A ``ConvNormAct`` declared with
/// ``ConvNormAct/Keys/inline(conv:norm:)`` adds no level: its convolution and norm are named
/// as the parent's own children.
open class Module {
    /// Whether the module is in training mode (dropout active, batch statistics used).
    public private(set) var isTraining = true
    /// Set by layers whose children are named as their parent's own (an inline ``ConvNormAct``).
    var addsNoPathLevel = false

    /// A module in training mode.
    public init() {}

    /// The direct children with their names, found by reflection (see ``Named``).
    ///
    /// Stops the program, naming the key, when a ``Named`` child was never assigned or when two
    /// children get one name.
    open func namedChildren() -> [(String, Module)] {
        var out: [(String, Module)] = []
        visitProperties { name, value, each in
            if let m = value as? Module {
                if m.addsNoPathLevel { out += m.namedChildren() } else { out.append((name, m)) }
            } else if let ms = value as? [Module] {
                if let each {
                    for (i, m) in ms.enumerated() { out.append((each(i), m)) }
                } else {
                    for (i, m) in ms.enumerated() { out.append(("\(name).\(i)", m)) }
                }
            }
        }
        var seen = Set<String>()
        for (name, _) in out {
            precondition(seen.insert(name).inserted, "\(type(of: self)): two children are named \(name)")
        }
        return out
    }

    /// This module's own parameters (not its children's).
    open func ownParameters() -> [(String, Parameter)] {
        var out: [(String, Parameter)] = []
        visitProperties { name, value, _ in if let p = value as? Parameter { out.append((name, p)) } }
        return out
    }

    /// This module's own buffers.
    open func ownBuffers() -> [(String, Buffer)] {
        var out: [(String, Buffer)] = []
        visitProperties { name, value, _ in if let b = value as? Buffer { out.append((name, b)) } }
        return out
    }

    /// Modules held in properties that add no path level (their children are listed instead).
    private func inlineChildren() -> [Module] {
        var out: [Module] = []
        visitProperties { _, value, _ in if let m = value as? Module, m.addsNoPathLevel { out.append(m) } }
        return out
    }

    /// Each stored property with its checkpoint name, unwrapped from ``Named`` and `Optional`
    /// (`nil` ones skipped), and the element names of a `@Named(each:)` array.
    private func visitProperties(_ body: (String, Any, ((Int) -> String)?) -> Void) {
        var mirrors: [Mirror] = []
        var m: Mirror? = Mirror(reflecting: self)
        while let cur = m { mirrors.append(cur); m = cur.superclassMirror }
        for mirror in mirrors.reversed() {
            for child in mirror.children {
                guard var label = child.label else { continue }
                var value = child.value
                var each: ((Int) -> String)?
                if let named = value as? NamedValue {
                    guard let v = named.anyValue else {
                        preconditionFailure("\(type(of: self)): the child @Named(\"\(named.key)\") was never assigned (assign it in init)")
                    }
                    label = named.key
                    each = named.elementKey
                    value = v
                } else if label.hasPrefix("_") {
                    continue
                }
                if let opt = value as? OptionalProtocol {
                    guard let unwrapped = opt.wrapped else { continue }
                    value = unwrapped
                }
                body(label, value, each)
            }
        }
    }

    /// Every parameter of this module and its descendants with its full path.
    public func namedParameters(prefix: String = "") -> [(String, Parameter)] {
        var out = ownParameters().map { (prefix + $0.0, $0.1) }
        for (name, child) in namedChildren() { out += child.namedParameters(prefix: prefix + name + ".") }
        return out
    }

    /// Every buffer with its full path.
    public func namedBuffers(prefix: String = "") -> [(String, Buffer)] {
        var out = ownBuffers().map { (prefix + $0.0, $0.1) }
        for (name, child) in namedChildren() { out += child.namedBuffers(prefix: prefix + name + ".") }
        return out
    }

    /// Every module in the tree, this one first, with its path.
    public func namedModules(prefix: String = "") -> [(String, Module)] {
        var out: [(String, Module)] = [(prefix, self)]
        for (name, child) in namedChildren() {
            out += child.namedModules(prefix: prefix.isEmpty ? name : prefix + "." + name)
        }
        return out
    }

    /// All parameters.
    public var parameters: [Parameter] { namedParameters().map(\.1) }

    /// The number of scalar parameters.
    public var parameterCount: Int { parameters.reduce(0) { $0 + $1.value.count } }

    /// Sets training or evaluation mode on the whole tree.
    ///
    /// Going into training mode also releases what inference cached on the parameters (the
    /// Winograd transforms and oneDNN reorders of the weights, ``TensorMemory/derivedCacheLimitBytes``):
    /// the first optimizer step would make them stale, and until then they would only add to the
    /// training step's peak memory. (Only on a change of mode: the trainer calls `train()`
    /// before every step, and walking the parameters again each time would be wasted.)
    public func train(_ on: Bool = true) {
        let entering = on && !isTraining
        for (_, m) in namedModules() { m.setMode(on) }
        if entering { for p in parameters { p.value.storage.releaseDerivedValues() } }
    }

    private func setMode(_ on: Bool) {
        isTraining = on
        didChangeMode()
        for m in inlineChildren() { m.setMode(on) }
    }

    /// Evaluation mode (dropout off, batch norm uses running statistics).
    public func eval() { train(false) }

    /// Called after the mode changes; override to react.
    open func didChangeMode() {}

    /// Drops every parameter's gradient.
    public func zeroGrad() { for p in parameters { p.zeroGrad() } }

    /// Parameters and buffers by path, in order (a `state_dict`).
    public func stateDict() -> [(String, Tensor)] {
        namedParameters().map { ($0.0, $0.1.value) } + namedBuffers().map { ($0.0, $0.1.value) }
    }
}

protocol OptionalProtocol { var wrapped: Any? { get } }
extension Optional: OptionalProtocol {
    var wrapped: Any? { if case .some(let v) = self { return v } else { return nil } }
}

// MARK: - Loading state

/// How strictly ``Module/load(_:options:)`` matches names.
public struct LoadOptions: OptionSet, Sendable {
    /// The option bits.
    public let rawValue: Int
    /// Options from bits.
    public init(rawValue: Int) { self.rawValue = rawValue }
    /// Every parameter and buffer of the module must be given.
    public static let noMissingKeys = LoadOptions(rawValue: 1)
    /// Every given name must belong to the module.
    public static let noUnusedKeys = LoadOptions(rawValue: 2)
    /// Shapes must agree (a mismatched tensor is never loaded, whatever the options).
    public static let shapeMismatch = LoadOptions(rawValue: 4)
    /// Accept tensors holding NaN or infinity (by default such a tensor is refused and named:
    /// weights of a diverged run or an edited file give boxes built from NaN).
    public static let allowNonFinite = LoadOptions(rawValue: 8)
    /// All checks: the default.
    public static let strict: LoadOptions = [.noMissingKeys, .noUnusedKeys, .shapeMismatch]
}

/// What a load did: which names loaded, and which did not fit.
public struct LoadReport: Sendable, CustomStringConvertible {
    /// Names that were (or, for a failed load, would have been) loaded.
    public var loaded: [String] = []
    /// Names of the module that the state did not contain.
    public var missing: [String] = []
    /// Names in the state that the module does not have.
    public var unexpected: [String] = []
    /// Names whose shapes differ: the module's shape and the state's.
    public var mismatched: [(name: String, expected: [Int], got: [Int])] = []
    /// Names whose values hold NaN or infinity (refused unless ``LoadOptions/allowNonFinite``).
    public var nonFinite: [String] = []
    /// The first non-finite value found (in the first name of ``nonFinite`` in order):
    /// its tensor, its element index (row-major) and the value.
    public var firstNonFinite: (name: String, index: Int, value: Float)?
    /// Whether the load was refused (then nothing was loaded, and ``loaded`` lists what
    /// would have been).
    public var refused = false

    /// An empty report.
    public init() {}

    /// One line per kind of problem, listing the names. A refused load says that nothing
    /// was loaded and names the first non-finite value, if any.
    public var description: String {
        ([refused ? "nothing was loaded (\(loaded.count) tensors would have fitted)" : "loaded \(loaded.count) tensors"] + problems)
            .joined(separator: "\n")
    }

    /// The lines of ``description`` after its first (what loaded): one per kind of problem,
    /// for a message that has already said whether anything was loaded.
    public var problems: [String] {
        var lines: [String] = []
        if let f = firstNonFinite {
            lines.append("first non-finite value: \(f.name)[\(f.index)] = \(f.value)")
        }
        if !missing.isEmpty { lines.append("missing (\(missing.count)): " + Self.list(missing)) }
        if !unexpected.isEmpty { lines.append("unexpected (\(unexpected.count)): " + Self.list(unexpected)) }
        if !mismatched.isEmpty {
            lines.append("mis-shaped (\(mismatched.count)): " + Self.list(mismatched.map { "\($0.name) expected \(describe($0.expected)) got \(describe($0.got))" }))
        }
        if !nonFinite.isEmpty {
            lines.append("not finite (\(nonFinite.count), NaN or infinity; allow with allowNonFinite / --allow-nonfinite): " + Self.list(nonFinite))
        }
        return lines
    }

    /// The most names a line of ``problems`` lists before it counts the rest (a file of another
    /// model misses every tensor: a line of 223 names ran to 8 KB).
    public static let namesPerLine = 12

    /// `names` joined with commas, the first ``namesPerLine`` then "and N more".
    static func list(_ names: [String]) -> String {
        let shown = names.prefix(namesPerLine).joined(separator: ", ")
        return names.count > namesPerLine ? shown + ", and \(names.count - namesPerLine) more" : shown
    }
}

/// A load that did not satisfy its options; nothing was changed.
public struct LoadError: Error, CustomStringConvertible, Sendable {
    /// Everything that did not fit.
    public let report: LoadReport
    /// The report, for people.
    public var description: String { "state does not fit the model:\n" + report.description }
}

extension Module {
    /// Loads parameters and buffers by path.
    ///
    /// Checks everything first and changes nothing when a check fails, so a failed load
    /// never leaves a half-loaded model.
    /// - Parameters:
    ///   - state: tensors by path.
    ///   - options: which mismatches are errors (``LoadOptions/strict`` by default).
    ///   - only: when set, only paths with this prefix take part (e.g. `"encoder."`).
    /// - Returns: the report of what loaded.
    /// - Throws: ``LoadError`` with the full report.
    @discardableResult
    public func load(_ state: [String: Tensor], options: LoadOptions = .strict, only prefix: String? = nil) throws -> LoadReport {
        var report = LoadReport()
        var targets: [(String, (Tensor) -> Void, [Int])] = []
        for (name, p) in namedParameters() { targets.append((name, { p.value = $0 }, p.shape)) }
        for (name, b) in namedBuffers() { targets.append((name, { b.value = $0 }, b.value.shape)) }
        if let prefix { targets = targets.filter { $0.0.hasPrefix(prefix) } }
        let known = Set(targets.map(\.0))
        var apply: [() -> Void] = []
        for (name, set, shape) in targets {
            guard let t = state[name] else { report.missing.append(name); continue }
            if t.shape != shape { report.mismatched.append((name, shape, t.shape)); continue }
            if !options.contains(.allowNonFinite), let i = t.withUnsafeBufferPointer({ b in b.firstIndex { !$0.isFinite } }) {
                report.nonFinite.append(name)
                let v = t.withUnsafeBufferPointer { $0[i] }
                if report.firstNonFinite.map({ name < $0.name }) ?? true { report.firstNonFinite = (name, i, v) }
                continue
            }
            report.loaded.append(name)
            apply.append { set(t.detached()) }
        }
        report.unexpected = state.keys.filter { !known.contains($0) && (prefix == nil || $0.hasPrefix(prefix!)) }.sorted()
        report.nonFinite.sort()
        let failed = !report.nonFinite.isEmpty || (!report.mismatched.isEmpty && options.contains(.shapeMismatch))
            || (!report.missing.isEmpty && options.contains(.noMissingKeys))
            || (!report.unexpected.isEmpty && options.contains(.noUnusedKeys))
        if failed {
            report.refused = true
            throw LoadError(report: report)
        }
        for a in apply { a() }
        return report
    }
}
