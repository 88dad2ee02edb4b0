import Foundation
import OpacityTensor

/// Turns an ``OpTrace`` of a forward pass into ONNX nodes: parameters and buffers become
/// initializers named by their module path, other constants become `const_*`
/// initializers, frozen batch norm that follows a convolution is folded into it, and the
/// batch dimension stays dynamic.
struct ONNXGraphBuilder {
    var model: ONNXModel
    /// Names of the values produced so far, by trace identity.
    private var names: [OpTrace.Key: String] = [:]
    /// Values that depend on the batch (the graph input and everything computed from it).
    private var batched: Set<OpTrace.Key> = []
    /// Parameters and buffers by storage identity: their path.
    private let parameterNames: [ObjectIdentifier: String]
    /// Initializers by name (written in creation order).
    private var initializerIndex: [String: Int] = [:]
    /// Initializers made from constants, by trace identity (so a constant is stored once).
    private var constantNames: [OpTrace.Key: String] = [:]
    /// How often the traced value behind an initializer is read (for folding in place).
    private var initializerReads: [String: Int] = [:]
    /// How often each value is read by a traced op.
    private var uses: [OpTrace.Key: Int] = [:]
    /// The node that produced a value name, for folding.
    private var producer: [String: Int] = [:]
    /// Names wanted for graph outputs.
    private let preferred: [OpTrace.Key: String]
    private var counter = 0
    /// The batch size the trace ran with.
    let traceBatch: Int

    init(graphName: String, parameters: [(String, Tensor)], input: Tensor, inputName: String,
         outputs: [(Tensor, String)], trace: OpTrace) {
        model = ONNXModel(graphName: graphName)
        var p: [ObjectIdentifier: String] = [:]
        for (name, t) in parameters where p[ObjectIdentifier(t.storage)] == nil { p[ObjectIdentifier(t.storage)] = name }
        parameterNames = p
        traceBatch = input.shape[0]
        let k = OpTrace.key(input)
        names[k] = inputName
        batched.insert(k)
        var pref: [OpTrace.Key: String] = [:]
        for (t, n) in outputs { pref[OpTrace.key(t)] = n }
        preferred = pref
        for op in trace.ops { for t in op.inputs { uses[OpTrace.key(t), default: 0] += 1 } }
        for (t, _) in outputs { uses[OpTrace.key(t), default: 0] += 1 }
    }

    // MARK: Names, constants and nodes

    mutating func fresh(_ stem: String) -> String {
        counter += 1
        return "\(stem)_\(counter)"
    }

    /// Adds an initializer unless one of that name exists.
    mutating func addInitializer(_ t: ONNXInitializer) {
        if let i = initializerIndex[t.name] { model.initializers[i] = t; return }
        initializerIndex[t.name] = model.initializers.count
        model.initializers.append(t)
    }

    func initializer(_ name: String) -> ONNXInitializer? { initializerIndex[name].map { model.initializers[$0] } }

    /// A float constant.
    mutating func constant(_ stem: String, dims: [Int], _ values: [Float]) -> String {
        let n = fresh(stem)
        addInitializer(ONNXInitializer(name: n, dims: dims, floats: values))
        return n
    }

    /// An int64 constant (shapes, axes, indices).
    mutating func constant(_ stem: String, dims: [Int], int64s values: [Int]) -> String {
        let n = fresh(stem)
        addInitializer(ONNXInitializer(name: n, dims: dims, int64s: values))
        return n
    }

    /// Appends a node and returns the name of its (first) output.
    @discardableResult
    mutating func node(_ op: String, _ inputs: [String], outputs: [String]? = nil,
                       _ attributes: [(String, ONNXAttribute)] = []) -> String {
        let outs = outputs ?? [fresh(op.lowercased())]
        let name = "\(op)_\(model.nodes.count)"
        for o in outs { producer[o] = model.nodes.count }
        model.nodes.append(ONNXNode(op, inputs: inputs, outputs: outs, name: name, attributes: attributes))
        return outs[0]
    }

    /// The graph name of a traced value: produced earlier, a parameter or buffer, or a
    /// constant (stored as an initializer the first time it is seen).
    mutating func value(_ t: Tensor) -> String {
        let k = OpTrace.key(t)
        if let n = names[k] { return n }
        if let n = constantNames[k] { return n }
        let name: String
        if let p = parameterNames[ObjectIdentifier(t.storage)], initializer(p) == nil || initializer(p)!.dims == t.shape {
            name = p
        } else {
            name = fresh("const")
        }
        addInitializer(ONNXInitializer(name: name, dims: t.shape, floats: t.scalars))
        constantNames[k] = name
        initializerReads[name] = uses[k] ?? 0
        return name
    }

    func isBatched(_ t: Tensor) -> Bool { batched.contains(OpTrace.key(t)) }

    /// The output name for a traced result: the graph output's name when it is one.
    mutating func outputName(_ t: Tensor, _ stem: String) -> String { preferred[OpTrace.key(t)] ?? fresh(stem) }

    /// Records that `name` holds the traced value `t`.
    mutating func bind(_ t: Tensor, _ name: String, batched isBatched: Bool) {
        let k = OpTrace.key(t)
        names[k] = name
        if isBatched { batched.insert(k) }
    }

    /// The name bound to a traced value, if any.
    func name(of t: Tensor) -> String? { names[OpTrace.key(t)] }

    // MARK: Translating traced operations

    mutating func translate(_ op: TracedOp) throws {
        let batchedOut = op.inputs.contains { isBatched($0) }
        let ins = op.inputs
        let out = op.output
        func ints(_ k: String) -> [Int] { if case .ints(let v)? = op.attributes[k] { return v }; return [] }
        func int(_ k: String) -> Int { if case .int(let v)? = op.attributes[k] { return v }; return 0 }
        func bool(_ k: String) -> Bool { if case .bool(let v)? = op.attributes[k] { return v }; return false }
        func float(_ k: String) -> Float { if case .float(let v)? = op.attributes[k] { return v }; return 0 }
        let simple: [String: String] = ["relu": "Relu", "sigmoid": "Sigmoid", "exp": "Exp", "log": "Log", "neg": "Neg",
                                        "add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div"]
        var result: String
        switch op.op {
        case let o where simple[o] != nil:
            let inputs = ins.map { value($0) }
            result = node(simple[o]!, inputs, outputs: [outputName(out, o)])
        case "square":
            let x = value(ins[0])
            result = node("Mul", [x, x], outputs: [outputName(out, "square")])
        case "addScalar", "mulScalar":
            let x = value(ins[0])
            let s = constant("scalar", dims: [], [float("scalar")])
            result = node(op.op == "addScalar" ? "Add" : "Mul", [x, s], outputs: [outputName(out, op.op)])
        case "conv2d":
            let w = ins[1].shape
            let (s, p, d) = (ints("stride"), ints("padding"), ints("dilation"))
            result = node("Conv", ins.map { value($0) }, outputs: [outputName(out, "conv")],
                          [("kernel_shape", .ints([w[2], w[3]])), ("strides", .ints(s)), ("pads", .ints([p[0], p[1], p[0], p[1]])),
                           ("dilations", .ints(d)), ("group", .int(int("groups")))])
        case "batchNorm2d":
            result = try batchNorm(op, eps: float("eps"), relu: bool("relu"))
        case "matmul":
            result = node("Gemm", [value(ins[0]), value(ins[1])], outputs: [outputName(out, "gemm")],
                          [("transA", .int(bool("transposeSelf") ? 1 : 0)), ("transB", .int(bool("transposeOther") ? 1 : 0))])
        case "gatherRows":
            let idx = ints("indices")
            let i = constant("indices", dims: [idx.count], int64s: idx)
            result = node("Gather", [value(ins[0]), i], outputs: [outputName(out, "gather")], [("axis", .int(0))])
        case "logSoftmax":
            result = node("LogSoftmax", [value(ins[0])], outputs: [outputName(out, "logsoftmax")], [("axis", .int(-1))])
        case "reshape":
            var target = out.shape
            if isBatched(ins[0]) {
                guard ins[0].rank > 0, out.rank > 0, ins[0].shape[0] == out.shape[0] else {
                    throw ONNXExportError.batchDependentShape(op: "reshape",
                        detail: "\(describe(ins[0].shape)) -> \(describe(out.shape)) changes the batch dimension")
                }
                target[0] = 0
            }
            let s = constant("shape", dims: [target.count], int64s: target)
            result = node("Reshape", [value(ins[0]), s], outputs: [outputName(out, "reshape")])
        case "permute":
            result = node("Transpose", [value(ins[0])], outputs: [outputName(out, "transpose")], [("perm", .ints(ints("order")))])
        case "concat":
            result = node("Concat", ins.map { value($0) }, outputs: [outputName(out, "concat")], [("axis", .int(int("axis")))])
        case "slice":
            let st = constant("starts", dims: [1], int64s: [int("start")])
            let en = constant("ends", dims: [1], int64s: [int("end")])
            let ax = constant("axes", dims: [1], int64s: [int("axis")])
            result = node("Slice", [value(ins[0]), st, en, ax], outputs: [outputName(out, "slice")])
        case "pad":
            var pads = [Int](repeating: 0, count: 2 * ins[0].rank)
            pads[int("axis")] = int("before")
            pads[ins[0].rank + int("axis")] = int("after")
            let pc = constant("pads", dims: [pads.count], int64s: pads)
            result = node("Pad", [value(ins[0]), pc], outputs: [outputName(out, "pad")], [("mode", .string("constant"))])
        case "sum":
            result = node("ReduceSum", [value(ins[0])], outputs: [outputName(out, "sum")], [("keepdims", .int(0))])
        case "sumAxes":
            let ax = constant("axes", dims: [ints("axes").count], int64s: ints("axes"))
            result = node("ReduceSum", [value(ins[0]), ax], outputs: [outputName(out, "sum")], [("keepdims", .int(1))])
        case "sumToShape":
            let s = ins[0].shape
            let t = Array(repeating: 1, count: s.count - out.rank) + out.shape
            let axes = (0..<s.count).filter { t[$0] == 1 && s[$0] != 1 }
            if batchedOut && axes.contains(0) {
                throw ONNXExportError.batchDependentShape(op: "sum(toShape:)", detail: "sums over the batch dimension of \(describe(s))")
            }
            let ax = constant("axes", dims: [axes.count], int64s: axes)
            var r = node("ReduceSum", [value(ins[0]), ax], [("keepdims", .int(1))])
            if out.rank != s.count {
                let sh = constant("shape", dims: [out.rank], int64s: out.shape)
                r = node("Reshape", [r, sh])
            }
            result = node("Identity", [r], outputs: [outputName(out, "sum")])
        case "maxPool2d", "avgPool2d":
            result = pool(op, max: op.op == "maxPool2d", kernel: ints("kernel"), stride: ints("stride"), padding: ints("padding"),
                          countIncludePad: bool("countIncludePad"))
        case "upsampleNearest2x":
            let scales = constant("scales", dims: [4], [1, 1, 2, 2])
            result = node("Resize", [value(ins[0]), "", scales], outputs: [outputName(out, "resize")],
                          [("mode", .string("nearest")), ("coordinate_transformation_mode", .string("asymmetric")),
                           ("nearest_mode", .string("floor"))])
        case "addUpsampled2x":
            // An FPN merge (``Tensor/conv2d(_:bias:stride:padding:dilation:groups:addingUpsampled2x:)``):
            // the lateral plus the map above resized 2x, as the separate ops export it.
            let scales = constant("scales", dims: [4], [1, 1, 2, 2])
            let up = node(
                "Resize", [value(ins[1]), "", scales],
                [("mode", .string("nearest")), ("coordinate_transformation_mode", .string("asymmetric")),
                 ("nearest_mode", .string("floor"))])
            result = node("Add", [value(ins[0]), up], outputs: [outputName(out, "add")])
        default:
            throw ONNXExportError.unsupportedOperation(op.op)
        }
        bind(out, result, batched: batchedOut)
    }

    /// Frozen batch norm: folded into the convolution that produced its input when that
    /// convolution's output feeds nothing else; `BatchNormalization` otherwise.
    private mutating func batchNorm(_ op: TracedOp, eps: Float, relu: Bool) throws -> String {
        let x = op.inputs[0], out = op.output
        let (gamma, beta, mean, variance) = (op.inputs[1].scalars, op.inputs[2].scalars, op.inputs[3].scalars, op.inputs[4].scalars)
        let c = gamma.count
        if let xName = name(of: x), uses[OpTrace.key(x)] == 1, preferred[OpTrace.key(x)] == nil,
           let ni = producer[xName], model.nodes[ni].opType == "Conv",
           let w = initializer(model.nodes[ni].inputs[1]), w.dims.first == c {
            // scale = gamma / sqrt(var + eps); W' = W * scale; b' = (b - mean) * scale + beta
            // (the engine's own a = gamma * istd and b = beta - mean * a, applied to the sum).
            var scale = [Float](repeating: 0, count: c), shift = [Float](repeating: 0, count: c)
            for i in 0..<c {
                let istd = 1 / (variance[i] + eps).squareRoot()
                scale[i] = gamma[i] * istd
                shift[i] = beta[i] - mean[i] * scale[i]
            }
            let wv = w.floats
            let per = wv.count / c
            var folded = [Float](repeating: 0, count: wv.count)
            for o in 0..<c { for j in 0..<per { folded[o * per + j] = Float(Double(wv[o * per + j]) * Double(scale[o])) } }
            var bias = shift
            if model.nodes[ni].inputs.count > 2, let b = initializer(model.nodes[ni].inputs[2]) {
                let bv = b.floats
                for o in 0..<c { bias[o] = Float(Double(bv[o]) * Double(scale[o]) + Double(shift[o])) }
            }
            // The folded weight is this convolution's alone: the original name when nothing
            // else reads it, a new one otherwise.
            let wName = model.nodes[ni].inputs[1]
            let foldedName = initializerReads[wName] == 1 ? wName : fresh(wName + ".folded")
            addInitializer(ONNXInitializer(name: foldedName, dims: w.dims, floats: folded))
            let bnPath = parameterNames[ObjectIdentifier(op.inputs[2].storage)].map { $0.replacingOccurrences(of: ".bias", with: "") }
            var biasName = (bnPath ?? fresh("bn")) + ".folded_bias"
            if initializer(biasName) != nil { biasName = fresh(biasName) }
            addInitializer(ONNXInitializer(name: biasName, dims: [c], floats: bias))
            model.nodes[ni].inputs = [model.nodes[ni].inputs[0], foldedName, biasName]
            if !relu {
                if let p = preferred[OpTrace.key(out)] { return node("Identity", [xName], outputs: [p]) }
                return xName
            }
            return node("Relu", [xName], outputs: [outputName(out, "relu")])
        }
        let inputs = op.inputs.map { value($0) }
        let y = node("BatchNormalization", inputs, outputs: relu ? nil : [outputName(out, "batchnorm")], [("epsilon", .float(eps))])
        return relu ? node("Relu", [y], outputs: [outputName(out, "relu")]) : y
    }

    /// Pooling with the engine's geometry made explicit: the extra end padding of ceil mode
    /// is written as asymmetric pads, and averages divide exactly as the engine does (cells
    /// inside the input, or the declared padding too, never the ceil-mode extension).
    private mutating func pool(_ op: TracedOp, max isMax: Bool, kernel k: [Int], stride s: [Int], padding p: [Int],
                               countIncludePad: Bool) -> String {
        let x = op.inputs[0], out = op.output
        let h = x.shape[2], w = x.shape[3], ho = out.shape[2], wo = out.shape[3]
        let endH = Swift.max(0, (ho - 1) * s[0] + k[0] - h - p[0])
        let endW = Swift.max(0, (wo - 1) * s[1] + k[1] - w - p[1])
        let attrs: [(String, ONNXAttribute)] = [("kernel_shape", .ints(k)), ("strides", .ints(s)), ("pads", .ints([p[0], p[1], endH, endW]))]
        if isMax { return node("MaxPool", [value(x)], outputs: [outputName(out, "maxpool")], attrs) }
        // The engine's divisor against ONNX's count of cells inside the input.
        var ratio = [Float](repeating: 1, count: ho * wo)
        var needsCorrection = false
        if countIncludePad {
            for oy in 0..<ho {
                let y0 = oy * s[0] - p[0], yEnd = Swift.min(y0 + k[0], h + p[0])
                for ox in 0..<wo {
                    let x0 = ox * s[1] - p[1], xEnd = Swift.min(x0 + k[1], w + p[1])
                    let ours = (yEnd - y0) * (xEnd - x0)
                    let inside = (Swift.min(yEnd, h) - Swift.max(y0, 0)) * (Swift.min(xEnd, w) - Swift.max(x0, 0))
                    if ours != inside { needsCorrection = true }
                    ratio[oy * wo + ox] = Float(inside) / Float(Swift.max(1, ours))
                }
            }
        }
        let avg = node("AveragePool", [value(x)], outputs: needsCorrection ? nil : [outputName(out, "avgpool")],
                       attrs + [("count_include_pad", .int(0))])
        guard needsCorrection else { return avg }
        let r = constant("pool_divisor", dims: [1, 1, ho, wo], ratio)
        return node("Mul", [avg, r], outputs: [outputName(out, "avgpool")])
    }
}

/// Why a model could not be exported to ONNX.
public enum ONNXExportError: Error, CustomStringConvertible, Sendable {
    /// The forward pass used an operation that has no ONNX translation here (e.g. a loss,
    /// training-mode batch norm or dropout).
    case unsupportedOperation(String)
    /// An operation fixes the batch size (the graph's batch dimension must stay dynamic).
    case batchDependentShape(op: String, detail: String)
    /// A graph output was not computed by traced operations from the input.
    case untracedOutput(String)
    /// The detector's post-processor is not one this exporter can express.
    case unsupportedPostprocessor(String)

    public var description: String {
        switch self {
        case .unsupportedOperation(let op):
            return "ONNX export: the forward pass uses '\(op)', which has no ONNX translation (is the model in evaluation mode?)"
        case .batchDependentShape(let op, let detail):
            return "ONNX export: \(op) \(detail); the exported graph needs a dynamic batch dimension"
        case .untracedOutput(let name):
            return "ONNX export: output '\(name)' was not computed by the engine's operations from the input images"
        case .unsupportedPostprocessor(let what):
            return "ONNX export: --postprocess supports the RetinaNet post-processor, not \(what)"
        }
    }
}
