import Opacity
import XCTest

final class ResNetTests: XCTestCase {
    func testParameterCountsEqualTimm() throws {
        // timm: resnet34 21,797,672; resnet50 25,557,032; resnet101 44,549,160 (3-channel stem, 1000 classes)
        let expected: [(ResNet.Depth, Int)] = [(.resnet34, 21_797_672), (.resnet50, 25_557_032), (.resnet101, 44_549_160)]
        for (depth, count) in expected {
            let net = ResNet(depth, inChannels: 3, classes: 1000)
            XCTAssertEqual(net.parameterCount, count, depth.name)
        }
    }

    func testTimmParameterNames() {
        let net = ResNet(.resnet50, inChannels: 3, classes: 1000)
        let names = Set(net.stateDict().map(\.0))
        for n in ["conv1.weight", "bn1.weight", "bn1.running_mean", "bn1.running_var", "layer1.0.conv1.weight",
                  "layer1.0.downsample.0.weight", "layer1.0.downsample.1.running_var", "layer4.2.bn3.bias", "fc.weight", "fc.bias"] {
            XCTAssertTrue(names.contains(n), n)
        }
    }

    func testFeatureShapes() throws {
        let reg = try Registry.standard()
        for (name, size, expected) in [("resnet34(width=0.25)", 512, [128, 64, 32, 16]), ("resnet50(width=0.125)", 200, [50, 25, 13, 7])] {
            let enc = try reg.makeEncoder(name)
            let f = Autograd.inference { enc.features(Tensor.zeros([1, 1, size, size])) }
            XCTAssertEqual(f.map { $0.shape[2] }, expected, name)
            XCTAssertEqual(f.map { $0.shape[1] }, enc.featureSpec.channels, name)
        }
    }
}
