import Foundation

/// The ONNX element types this module writes (`TensorProto.DataType`).
public enum ONNXElementType: Int, Sendable {
    case float = 1
    case int64 = 7
    case bool = 9
}

/// An attribute value of an ONNX node (`AttributeProto`).
public enum ONNXAttribute: Sendable, Equatable {
    case int(Int)
    case ints([Int])
    case float(Float)
    case floats([Float])
    case string(String)
}

/// One node of an ONNX graph (`NodeProto`).
public struct ONNXNode: Sendable {
    /// The operator, e.g. `Conv` (default domain, opset ``ONNXModel/opsetVersion``).
    public var opType: String
    /// Input value names; an empty name is an omitted optional input.
    public var inputs: [String]
    /// Output value names.
    public var outputs: [String]
    /// A unique node name.
    public var name: String
    /// Attributes by name.
    public var attributes: [(String, ONNXAttribute)]

    public init(_ opType: String, inputs: [String], outputs: [String], name: String, attributes: [(String, ONNXAttribute)] = []) {
        self.opType = opType
        self.inputs = inputs
        self.outputs = outputs
        self.name = name
        self.attributes = attributes
    }
}

/// A constant tensor of the graph (`TensorProto`, stored as `raw_data`, little-endian).
public struct ONNXInitializer: Sendable {
    public var name: String
    public var dims: [Int]
    public var type: ONNXElementType
    /// The raw little-endian bytes.
    public var raw: [UInt8]

    /// A float32 tensor.
    public init(name: String, dims: [Int], floats: [Float]) {
        self.name = name
        self.dims = dims
        self.type = .float
        self.raw = floats.withUnsafeBytes { Array($0) }
    }

    /// An int64 tensor.
    public init(name: String, dims: [Int], int64s: [Int]) {
        self.name = name
        self.dims = dims
        self.type = .int64
        self.raw = int64s.map { Int64($0) }.withUnsafeBytes { Array($0) }
    }

    /// The float values (for float tensors).
    public var floats: [Float] {
        raw.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }
}

/// One dimension of a graph input's or output's shape: fixed, or named (dynamic).
public enum ONNXDimension: Sendable, Equatable {
    case fixed(Int)
    case named(String)
}

/// A graph input or output with its type (`ValueInfoProto`).
public struct ONNXValueInfo: Sendable {
    public var name: String
    public var type: ONNXElementType
    public var shape: [ONNXDimension]
    public var doc: String

    public init(name: String, type: ONNXElementType = .float, shape: [ONNXDimension], doc: String = "") {
        self.name = name
        self.type = type
        self.shape = shape
        self.doc = doc
    }
}

/// An ONNX model: one graph, opset 17, IR version 8, with metadata properties.
public struct ONNXModel: Sendable {
    /// The IR version written (ONNX 1.13; every ONNX Runtime since 1.14 reads it).
    public static let irVersion = 8
    /// The default-domain opset the graph uses.
    public static let opsetVersion = 17

    public var graphName: String
    public var nodes: [ONNXNode] = []
    public var initializers: [ONNXInitializer] = []
    public var inputs: [ONNXValueInfo] = []
    public var outputs: [ONNXValueInfo] = []
    /// `metadata_props`, in order.
    public var metadata: [(String, String)] = []
    public var producerName = "opacity"
    public var producerVersion = ""
    public var docString = ""

    public init(graphName: String) { self.graphName = graphName }

    /// The serialized `ModelProto`.
    public func serialized() -> Data {
        var w = ProtoWriter()
        w.int(1, Self.irVersion)
        w.string(2, producerName)
        w.string(3, producerVersion)
        if !docString.isEmpty { w.string(6, docString) }
        w.message(7) { g in writeGraph(&g) }
        w.message(8) { o in
            o.string(1, "")
            o.int(2, Self.opsetVersion)
        }
        for (k, v) in metadata {
            w.message(14) { e in
                e.string(1, k)
                e.string(2, v)
            }
        }
        return Data(w.bytes)
    }

    private func writeGraph(_ g: inout ProtoWriter) {
        for n in nodes {
            g.message(1) { m in
                for i in n.inputs { m.string(1, i) }
                for o in n.outputs { m.string(2, o) }
                m.string(3, n.name)
                m.string(4, n.opType)
                for (name, value) in n.attributes {
                    m.message(5) { a in Self.writeAttribute(&a, name, value) }
                }
            }
        }
        g.string(2, graphName)
        for t in initializers {
            g.message(5) { m in
                m.packedInts(1, t.dims)
                m.int(2, t.type.rawValue)
                m.string(8, t.name)
                m.data(9, t.raw)
            }
        }
        for v in inputs { g.message(11) { m in Self.writeValueInfo(&m, v) } }
        for v in outputs { g.message(12) { m in Self.writeValueInfo(&m, v) } }
    }

    private static func writeAttribute(_ a: inout ProtoWriter, _ name: String, _ value: ONNXAttribute) {
        a.string(1, name)
        switch value {
        case .float(let f):
            a.float(2, f)
            a.int(20, 1)
        case .int(let i):
            a.int(3, i)
            a.int(20, 2)
        case .string(let s):
            a.string(4, s)
            a.int(20, 3)
        case .floats(let fs):
            a.packedFloats(7, fs)
            a.int(20, 6)
        case .ints(let xs):
            a.packedInts(8, xs)
            a.int(20, 7)
        }
    }

    private static func writeValueInfo(_ m: inout ProtoWriter, _ v: ONNXValueInfo) {
        m.string(1, v.name)
        m.message(2) { t in
            t.message(1) { tt in
                tt.int(1, v.type.rawValue)
                tt.message(2) { s in
                    for d in v.shape {
                        s.message(1) { dim in
                            switch d {
                            case .fixed(let n): dim.int(1, n)
                            case .named(let p): dim.string(2, p)
                            }
                        }
                    }
                }
            }
        }
        if !v.doc.isEmpty { m.string(3, v.doc) }
    }
}
