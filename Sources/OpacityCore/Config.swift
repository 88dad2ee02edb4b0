import Foundation

/// A value in a config string.
public enum ConfigValue: Hashable, Sendable, CustomStringConvertible {
    case int(Int)
    case float(Double)
    case bool(Bool)
    /// A bare identifier or a quoted string.
    case string(String)
    /// An inclusive integer range written `2-7`.
    case range(ClosedRange<Int>)
    /// A nested component, e.g. `resnet34(width=0.5)`.
    case config(Config)

    public var description: String {
        switch self {
        case .int(let v): return String(v)
        case .float(let v): return Config.format(v)
        case .bool(let v): return v ? "true" : "false"
        case .string(let s): return Config.isIdentifier(s) ? s : "\"" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
        case .range(let r): return "\(r.lowerBound)-\(r.upperBound)"
        case .config(let c): return c.description
        }
    }

    /// A short name of the value's type, for messages.
    public var typeName: String {
        switch self {
        case .int: return "integer"
        case .float: return "number"
        case .bool: return "boolean"
        case .string: return "string"
        case .range: return "range"
        case .config: return "component"
        }
    }
}

/// A parsed config string: a component name and its arguments.
///
/// Grammar (whitespace is free between tokens):
/// ```
/// config := name [ "(" [ arg { "," arg } ] ")" ]
/// arg    := key "=" value
/// value  := config | integer | number | "true" | "false" | integer "-" integer | quoted-string
/// name, key := letter { letter | digit | "_" | "." }
/// ```
/// Examples: `resnet34`, `retinanet(encoder=resnet34, size=512, levels=2-7, dropout=0.5)`,
/// `retinanet(encoder=resnet34(width=0.25), fpn_channels=64)`.
///
/// ``description`` prints the arguments in the order held; ``Registry/canonical(_:)``
/// gives the canonical form (defaults elided, keys sorted) used as the registry key,
/// stored in bundles and used to name runs.
public struct Config: Hashable, Sendable, CustomStringConvertible {
    public var name: String
    public var arguments: [(key: String, value: ConfigValue)]

    public init(name: String, arguments: [(key: String, value: ConfigValue)] = []) {
        self.name = name
        self.arguments = arguments
    }

    /// The value for `key`, if given.
    public subscript(key: String) -> ConfigValue? {
        get { arguments.first { $0.key == key }?.value }
        set {
            if let i = arguments.firstIndex(where: { $0.key == key }) {
                if let newValue { arguments[i].value = newValue } else { arguments.remove(at: i) }
            } else if let newValue {
                arguments.append((key, newValue))
            }
        }
    }

    public static func == (a: Config, b: Config) -> Bool {
        a.name == b.name && a.arguments.count == b.arguments.count
            && zip(a.arguments, b.arguments).allSatisfy { $0.key == $1.key && $0.value == $1.value }
    }

    public func hash(into h: inout Hasher) {
        h.combine(name)
        for (k, v) in arguments { h.combine(k); h.combine(v) }
    }

    public var description: String {
        arguments.isEmpty ? name : name + "(" + arguments.map { "\($0.key)=\($0.value)" }.joined(separator: ", ") + ")"
    }

    /// Parses a config string.
    /// - Throws: ``ConfigError/syntax(_:position:expected:)`` with the column and what was expected.
    public init(parsing text: String) throws {
        guard text.count <= InputLimits.configLength else {
            throw ConfigError.syntax(text, position: InputLimits.configLength, expected: "a config of at most \(InputLimits.configLength) characters")
        }
        var p = ConfigParser(text)
        self = try p.parseTop()
    }

    static func isIdentifier(_ s: String) -> Bool {
        guard let f = s.unicodeScalars.first, CharacterSet.letters.contains(f) else { return false }
        if s == "true" || s == "false" { return false }
        return s.unicodeScalars.allSatisfy { CharacterSet.alphanumerics.contains($0) || $0 == "_" || $0 == "." }
    }

    /// Shortest text that reads back as the same `Double`, always with a decimal point or
    /// exponent so it stays a number, e.g. `0.5`, `1e-05`, `2.0`.
    static func format(_ v: Double) -> String {
        var s = "\(v)"
        if !s.contains(".") && !s.contains("e") && !s.contains("n") && !s.contains("i") { s += ".0" }
        return s
    }
}

/// Errors in config strings, with the list of valid choices and the nearest one.
public enum ConfigError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The text does not follow the grammar.
    case syntax(String, position: Int, expected: String)
    /// A component name that is not registered for this role.
    case unknownName(kind: String, name: String, valid: [String], nearest: String?)
    /// An argument the component does not take.
    case unknownKey(component: String, key: String, valid: [String], nearest: String?)
    /// A value of the wrong type or out of range.
    case invalidValue(component: String, key: String, value: String, expected: String)
    /// A key given twice.
    case duplicateKey(component: String, key: String)
    /// Two plugins registered the same name.
    case duplicateName(kind: String, name: String, firstPlugin: String, secondPlugin: String)
    /// Parts of a detector that do not fit each other.
    case incompatible(String)
    /// A model of more values (weights and buffers) than ``InputLimits/modelValues``, or
    /// (`addressSpace`) more than this process may map; found by a probe build that
    /// allocates none of them.
    case tooLarge(config: String, values: Int, limit: Int, addressSpace: Bool = false)

    public var description: String {
        switch self {
        case let .syntax(text, pos, expected):
            // at most 80 characters of the text around the column, so the caret still points
            let chars = Array(text)
            let from = max(0, min(pos - 40, chars.count - 80)), to = min(chars.count, from + 80)
            let shown = (from > 0 ? "…" : "") + String(chars[from..<to]) + (to < chars.count ? "…" : "")
            let caret = pos - from + (from > 0 ? 1 : 0)
            return "config syntax error at column \(pos + 1): expected \(expected)\n  \(shown)\n  \(String(repeating: " ", count: max(0, caret)))^"
        case let .unknownName(kind, name, valid, nearest):
            return "unknown \(kind) '\(InputLimits.quoted(name))'" + (nearest.map { "; did you mean '\($0)'?" } ?? "") + " Valid: \(valid.joined(separator: ", "))"
        case let .unknownKey(component, key, valid, nearest):
            return "\(component) has no parameter '\(InputLimits.quoted(key))'" + (nearest.map { "; did you mean '\($0)'?" } ?? "")
                + " Valid: \(valid.isEmpty ? "(none)" : valid.joined(separator: ", "))"
        case let .invalidValue(component, key, value, expected):
            return "\(component): \(key)=\(InputLimits.quoted(value)) is invalid; expected \(expected)"
        case let .duplicateKey(component, key):
            return "\(component): '\(key)' is given twice"
        case let .duplicateName(kind, name, first, second):
            return "\(kind) '\(name)' is registered by both plugin \(first) and plugin \(second)"
        case let .incompatible(message):
            return message
        case let .tooLarge(config, values, limit, addressSpace):
            let gb = { (n: Int) in String(format: "%.1f GB", Double(n) * 4 / 1e9) }
            let shown = values == .max ? "more than \(Int.max) values" : "\(values) values (\(gb(values)) as 32-bit floats)"
            if addressSpace {
                return "model \(InputLimits.quotedConfig(config)) needs \(shown), more than this process may map (see ulimit -v); nothing was allocated"
            }
            return "model \(InputLimits.quotedConfig(config)) has \(shown); the most a model may have is \(limit) (\(gb(limit))): lower its width or channels. Nothing was allocated"
        }
    }
}

struct ConfigParser {
    let text: String
    let chars: [Character]
    var i = 0
    /// Components open around the current position (bounded by ``InputLimits/nestingDepth``).
    var depth = 0

    init(_ text: String) {
        self.text = text
        self.chars = Array(text)
    }

    mutating func skipSpace() { while i < chars.count, chars[i].isWhitespace { i += 1 } }

    func fail(_ expected: String) -> ConfigError { .syntax(text, position: min(i, chars.count), expected: expected) }

    mutating func parseTop() throws -> Config {
        skipSpace()
        let c = try parseConfig()
        skipSpace()
        if i < chars.count { throw fail("end of text") }
        return c
    }

    mutating func identifier() -> String? {
        skipSpace()
        guard i < chars.count, chars[i].isLetter else { return nil }
        let start = i
        while i < chars.count, chars[i].isLetter || chars[i].isNumber || chars[i] == "_" || chars[i] == "." { i += 1 }
        return String(chars[start..<i])
    }

    mutating func parseConfig() throws -> Config {
        depth += 1
        defer { depth -= 1 }
        if depth > InputLimits.nestingDepth { throw fail("components nested at most \(InputLimits.nestingDepth) deep") }
        guard let name = identifier() else { throw fail("a component name") }
        var config = Config(name: name)
        skipSpace()
        guard i < chars.count, chars[i] == "(" else { return config }
        i += 1
        skipSpace()
        if i < chars.count, chars[i] == ")" { i += 1; return config }
        while true {
            let keyPos = i
            guard let key = identifier() else { throw fail("a parameter name") }
            if config[key] != nil {
                i = keyPos
                throw ConfigError.duplicateKey(component: name, key: key)
            }
            skipSpace()
            guard i < chars.count, chars[i] == "=" else { throw fail("'=' after '\(key)'") }
            i += 1
            config.arguments.append((key, try parseValue()))
            skipSpace()
            guard i < chars.count else { throw fail("',' or ')'") }
            if chars[i] == "," { i += 1; continue }
            if chars[i] == ")" { i += 1; return config }
            throw fail("',' or ')'")
        }
    }

    mutating func parseValue() throws -> ConfigValue {
        skipSpace()
        guard i < chars.count else { throw fail("a value") }
        let c = chars[i]
        if c == "\"" {
            i += 1
            var s = ""
            while i < chars.count, chars[i] != "\"" {
                if chars[i] == "\\", i + 1 < chars.count { i += 1 }
                s.append(chars[i])
                i += 1
            }
            guard i < chars.count else { throw fail("a closing '\"'") }
            i += 1
            return .string(s)
        }
        if c.isNumber || c == "-" || c == "+" || c == "." {
            let start = i
            if c == "-" || c == "+" { i += 1 }
            while i < chars.count, chars[i].isNumber || chars[i] == "." || chars[i] == "e" || chars[i] == "E"
                || ((chars[i] == "-" || chars[i] == "+") && (chars[i - 1] == "e" || chars[i - 1] == "E")) { i += 1 }
            let numText = String(chars[start..<i])
            // a range `2-7`
            if i < chars.count, chars[i] == "-", let lo = Int(numText) {
                i += 1
                let s2 = i
                while i < chars.count, chars[i].isNumber { i += 1 }
                guard let hi = Int(String(chars[s2..<i])) else { throw fail("the upper end of a range like 2-7") }
                guard lo <= hi else { i = start; throw fail("a range whose lower end is not above its upper end") }
                return .range(lo...hi)
            }
            if let v = Int(numText) { return .int(v) }
            if let v = Double(numText), v.isFinite { return .float(v) }
            i = start
            throw fail("a finite number")
        }
        if c.isLetter {
            let save = i
            let id = identifier()!
            if id == "true" { return .bool(true) }
            if id == "false" { return .bool(false) }
            skipSpace()
            if i < chars.count, chars[i] == "(" {
                i = save
                return .config(try parseConfig())
            }
            return .string(id)
        }
        throw fail("a value (number, name, range like 2-7, or quoted string)")
    }
}

/// The edit (Levenshtein) distance between two strings' characters.
private func editDistance(_ a: [Character], _ b: [Character]) -> Int {
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var prev = Array(0...b.count), cur = [Int](repeating: 0, count: b.count + 1)
    for i in 1...a.count {
        cur[0] = i
        for j in 1...b.count {
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        swap(&prev, &cur)
    }
    return prev[b.count]
}

/// The nearest string to `word` among `candidates` by edit distance, if close enough to
/// be a plausible typo.
public func nearestMatch(_ word: String, in candidates: [String]) -> String? {
    // a long word is no typo of a short name (and the distance is quadratic)
    guard word.count <= 64 else { return nil }
    let w = Array(word.lowercased())
    let scored = candidates.map { ($0, editDistance(w, Array($0.lowercased()))) }
    guard let best = scored.min(by: { $0.1 < $1.1 }) else { return nil }
    let limit = max(2, w.count / 2)
    if best.1 <= limit { return best.0 }
    // a prefix or substring match is also a good guess
    return candidates.first { $0.lowercased().hasPrefix(word.lowercased()) || word.lowercased().hasPrefix($0.lowercased()) }
}

/// The candidate nearest to `word`, however far: ``nearestMatch(_:in:)`` when it finds a
/// plausible typo, else the first candidate with the fewest edits (case ignored; only the
/// first 64 characters of `word` are compared). `nil` only when `candidates` is empty.
/// For a short list of choices (an option's values), where naming the closest one always helps.
public func nearestValue(_ word: String, in candidates: [String]) -> String? {
    if let near = nearestMatch(word, in: candidates) { return near }
    let w = Array(word.lowercased().prefix(64))
    return candidates.min { editDistance(w, Array($0.lowercased())) < editDistance(w, Array($1.lowercased())) }
}
