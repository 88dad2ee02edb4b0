import Foundation
import Opacity

// The networks of the engine sections come from the plugins through the registry, as every
// command builds them: ResNet-50 is the ResNet plugin's encoder with three input channels
// and the 1000-way classifier (timm/torchvision layout: 7x7/2 stem, 3x3/2 max pool,
// bottlenecks [3, 4, 6, 3] with the stride on the 3x3, global average pool, linear).
// scripts/bench_pytorch.py builds the same network in PyTorch.

/// One convolution of a network, with the input it sees at a given image size.
struct ConvSpec: Hashable {
    var inChannels: Int
    var outChannels: Int
    var kernel: Int
    var stride: Int
    var padding: Int
    /// Input height and width.
    var height: Int
    var width: Int

    var outHeight: Int { (height + 2 * padding - kernel) / stride + 1 }
    var outWidth: Int { (width + 2 * padding - kernel) / stride + 1 }
    /// Floating-point operations of one image (a multiply-add counts two).
    var flops: Double {
        2 * Double(outChannels * inChannels * kernel * kernel) * Double(outHeight * outWidth)
    }
    var label: String {
        "\(kernel)x\(kernel)\(stride > 1 ? "/\(stride)" : "") \(inChannels)->\(outChannels) @\(height)x\(width)"
    }
}

enum BenchNetwork {
    /// The encoder config of the resnet50 and conv sections.
    static let resnet50Config = "resnet50(in_channels=3, classes=1000)"

    /// The ResNet plugin's ResNet-50 with the classifier, weights from seed 1.
    static func resnet50() throws -> ResNet {
        let registry = try Registry.standard()
        let encoder = try Initializer.withSeed(1) { try registry.makeEncoder(resnet50Config) }
        guard let net = encoder as? ResNet else {
            throw BenchError("\(resnet50Config) built a \(type(of: encoder)), not the ResNet plugin's ResNet")
        }
        return net
    }

    /// Every convolution of one forward pass of `net` on a `[1, 3, size, size]` image, in
    /// execution order, read from a trace of that pass (``OpTrace``).
    static func convolutions(of net: ResNet, imageSize size: Int) -> [ConvSpec] {
        let x = Tensor.zeros([1, 3, size, size])
        let trace = OpTrace()
        net.eval()
        Autograd.inference { _ = trace.run { net.classify(x) } }
        return trace.ops.compactMap { op -> ConvSpec? in
            guard op.op == "conv2d", op.inputs.count >= 2 else { return nil }
            let x = op.inputs[0].shape, w = op.inputs[1].shape
            guard case .ints(let stride)? = op.attributes["stride"], case .ints(let padding)? = op.attributes["padding"],
                w[2] == w[3], stride[0] == stride[1], padding[0] == padding[1]
            else { return nil }
            return ConvSpec(inChannels: x[1], outChannels: w[0], kernel: w[2], stride: stride[0], padding: padding[0], height: x[2], width: x[3])
        }
    }
}
