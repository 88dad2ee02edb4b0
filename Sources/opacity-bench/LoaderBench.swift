import Foundation
import Opacity

extension BenchSection {
    /// The real RSNA DICOMs the loader section decodes: `$OPACITY_REALDATA` or
    /// `../shared/realdata` beside the checkout.
    static var realdata: URL {
        if let p = ProcessInfo.processInfo.environment["OPACITY_REALDATA"] { return URL(fileURLWithPath: p) }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("shared/realdata")
    }

    static let loader = BenchSection(
        name: "loader", summary: "decode + heavy augmentation + resize of the RSNA DICOMs, 1024 -> 512, on one thread (target: 20 images/s)",
        runsByDefault: true
    ) { context in
        print("== loader: RSNA DICOM (JPEG Baseline) decode + heavy augmentation + warp 1024 -> 512, one thread")
        let folder = realdata.appendingPathComponent("rsna/stage_1_train_images")
        guard let files = try? ImageFile.list(in: folder), !files.isEmpty else {
            print("  skipped: no RSNA DICOMs in \(folder.path) (set OPACITY_REALDATA)")
            return
        }
        let images = max(24, 12 * context.options.repetitions)
        guard let r = try? LoaderBenchmark.run(files: files, outputSize: 512, augmentation: .heavy, images: images) else {
            print("  failed to read \(folder.path)")
            return
        }
        print("  \(r)")
        print(String(format: "  %.1f images/s = %.1fx the 20 images/s two training cores need", r.imagesPerSecond, r.imagesPerSecond / 20))
        print("")
    }
}
