import Opacity

// A ResNet-50-shaped network built from the engine's layers, laid out as torchvision's and
// timm's `resnet50` (7x7 stem, 3x3 max pool, bottlenecks [3, 4, 6, 3] with the stride on
// the 3x3 convolution, global average pool, 1000-way classifier), with the same parameter
// names (`layer1.0.conv1.weight`). scripts/bench_pytorch.py builds the same network in
// PyTorch. The real encoders live in the ResNet plugin; this one only serves the benchmark.

/// One convolution of the network, with the input it sees at a given image size.
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

enum ResNet50Layout {
    static let blocks = [3, 4, 6, 3]
    static let widths = [64, 128, 256, 512]
    static let expansion = 4

    /// Every convolution in forward order, with the name of the module it belongs to.
    static func convolutions(imageSize s: Int) -> [(name: String, spec: ConvSpec)] {
        var out: [(String, ConvSpec)] = []
        var size = s
        let stem = ConvSpec(inChannels: 3, outChannels: 64, kernel: 7, stride: 2, padding: 3, height: size, width: size)
        out.append(("conv1", stem))
        size = stem.outHeight
        size = (size + 2 - 3) / 2 + 1  // max pool 3x3/2, padding 1
        var inplanes = 64
        for (li, (count, planes)) in zip(blocks, widths).enumerated() {
            for b in 0..<count {
                let stride = (b == 0 && li > 0) ? 2 : 1
                let prefix = "layer\(li + 1).\(b)"
                let c1 = ConvSpec(inChannels: inplanes, outChannels: planes, kernel: 1, stride: 1, padding: 0, height: size, width: size)
                let c2 = ConvSpec(inChannels: planes, outChannels: planes, kernel: 3, stride: stride, padding: 1, height: size, width: size)
                let after = c2.outHeight
                let c3 = ConvSpec(inChannels: planes, outChannels: planes * expansion, kernel: 1, stride: 1, padding: 0, height: after, width: after)
                out.append(("\(prefix).conv1", c1))
                out.append(("\(prefix).conv2", c2))
                out.append(("\(prefix).conv3", c3))
                if b == 0 {
                    let ds = ConvSpec(inChannels: inplanes, outChannels: planes * expansion, kernel: 1, stride: stride, padding: 0,
                                      height: size, width: size)
                    out.append(("\(prefix).downsample.0", ds))
                }
                inplanes = planes * expansion
                size = after
            }
        }
        return out
    }
}

/// A bottleneck block: 1x1 reduce, 3x3 (carrying the stride), 1x1 expand, plus shortcut.
final class BenchBottleneck: Module, Layer {
    let conv1: Conv2d
    let bn1: BatchNorm2d
    let conv2: Conv2d
    let bn2: BatchNorm2d
    let conv3: Conv2d
    let bn3: BatchNorm2d
    let downsample: Sequential?
    /// Batch norm and ReLU in one pass (`bn(x, relu: true)`) or as two ops.
    let fused: Bool

    init(inplanes: Int, planes: Int, stride: Int, fused: Bool) {
        self.fused = fused
        let outplanes = planes * ResNet50Layout.expansion
        conv1 = Conv2d(inplanes, planes, kernel: 1, bias: false, initializer: .heNormal(fanOut: true))
        bn1 = BatchNorm2d(planes)
        conv2 = Conv2d(planes, planes, kernel: 3, stride: stride, padding: 1, bias: false, initializer: .heNormal(fanOut: true))
        bn2 = BatchNorm2d(planes)
        conv3 = Conv2d(planes, outplanes, kernel: 1, bias: false, initializer: .heNormal(fanOut: true))
        bn3 = BatchNorm2d(outplanes)
        if stride != 1 || inplanes != outplanes {
            downsample = Sequential(
                Conv2d(inplanes, outplanes, kernel: 1, stride: stride, bias: false, initializer: .heNormal(fanOut: true)),
                BatchNorm2d(outplanes))
        } else {
            downsample = nil
        }
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        var y = fused ? bn1(conv1(x), relu: true) : bn1(conv1(x)).relu()
        y = fused ? bn2(conv2(y), relu: true) : bn2(conv2(y)).relu()
        y = bn3(conv3(y))
        let shortcut = downsample.map { $0(x) } ?? x
        return (y + shortcut).relu()
    }
}

/// ResNet-50 with timm's parameter names.
final class BenchResNet50: Module, Layer {
    let conv1: Conv2d
    let bn1: BatchNorm2d
    let layer1: Sequential
    let layer2: Sequential
    let layer3: Sequential
    let layer4: Sequential
    let fc: Linear
    let fused: Bool

    /// - Parameter fused: batch norm + ReLU in one pass where they follow each other.
    init(classes: Int = 1000, fused: Bool = true) {
        self.fused = fused
        conv1 = Conv2d(3, 64, kernel: 7, stride: 2, padding: 3, bias: false, initializer: .heNormal(fanOut: true))
        bn1 = BatchNorm2d(64)
        var inplanes = 64
        var layers: [Sequential] = []
        for (li, (count, planes)) in zip(ResNet50Layout.blocks, ResNet50Layout.widths).enumerated() {
            var blocks: [any Layer] = []
            for b in 0..<count {
                blocks.append(BenchBottleneck(inplanes: inplanes, planes: planes, stride: (b == 0 && li > 0) ? 2 : 1,
                                              fused: fused))
                inplanes = planes * ResNet50Layout.expansion
            }
            layers.append(Sequential(blocks))
        }
        (layer1, layer2, layer3, layer4) = (layers[0], layers[1], layers[2], layers[3])
        fc = Linear(inplanes, classes)
    }

    /// `[N, 3, H, W]` -> `[N, classes]` logits.
    func callAsFunction(_ x: Tensor) -> Tensor {
        var y = fused ? bn1(conv1(x), relu: true) : bn1(conv1(x)).relu()
        y = y.maxPool2d(kernel: (3, 3), stride: (2, 2), padding: (1, 1))
        y = layer4(layer3(layer2(layer1(y))))
        return fc(y.globalAvgPool2d().flattened())
    }
}
