import OpacityTensor
import XCTest

/// End to end: a small convnet fits a few synthetic images to near-zero loss.
final class LearningTests: XCTestCase {
    final class SmallConvNet: Module, Layer {
        let conv1 = Conv2d(1, 8, kernel: 3, padding: 1, bias: false, initializer: .heNormal(fanOut: false))
        let bn1 = BatchNorm2d(8)
        let conv2 = Conv2d(8, 16, kernel: 3, stride: 2, padding: 1, initializer: .heNormal(fanOut: false))
        let fc = Linear(16, 3)

        func callAsFunction(_ x: Tensor) -> Tensor {
            var y = bn1(conv1(x)).relu().maxPool2d(kernel: (2, 2))
            y = conv2(y).relu()
            return fc(y.globalAvgPool2d().flattened())
        }
    }

    /// Images of a bright square, a vertical bar or a horizontal bar at random places, with noise.
    func syntheticImages(count: Int, seed: UInt64) -> (Tensor, [Int]) {
        var rng = RandomGenerator(seed: seed)
        var pixels = [Float](repeating: 0, count: count * 16 * 16)
        var labels: [Int] = []
        for i in 0..<count {
            let label = i % 3
            labels.append(label)
            let (h, w) = label == 0 ? (5, 5) : label == 1 ? (12, 3) : (3, 12)
            let y0 = rng.nextInt(16 - h + 1), x0 = rng.nextInt(16 - w + 1)
            for y in 0..<16 {
                for x in 0..<16 {
                    let inside = y >= y0 && y < y0 + h && x >= x0 && x < x0 + w
                    pixels[i * 256 + y * 16 + x] = (inside ? 1 : 0) + rng.normal(std: 0.1)
                }
            }
        }
        return (Tensor(shape: [count, 1, 16, 16], scalars: pixels), labels)
    }

    func testSmallConvNetFitsSyntheticImages() {
        let model = Initializer.withSeed(3) { SmallConvNet() }
        let (x, labels) = syntheticImages(count: 12, seed: 4)
        let opt = Adam(model.namedParameters(), learningRate: 0.02)
        var losses: [Float] = []
        for _ in 0..<150 {
            opt.zeroGrad()
            let loss = model(x).crossEntropy(targets: labels)
            loss.backward()
            opt.step()
            losses.append(loss.scalar)
        }
        model.eval()
        let evalLoss = Autograd.inference { model(x).crossEntropy(targets: labels).scalar }
        print("small convnet: loss \(losses[0]) -> \(losses.last!) (training), \(evalLoss) (evaluation mode)")
        XCTAssertGreaterThan(losses[0], 0.8, "starts near log(3)")
        XCTAssertLessThan(losses.last!, 0.02, "fits the training images")
        XCTAssertLessThan(evalLoss, 0.1, "running statistics fit too")
    }
}
