import Foundation
import OpacityCore
import OpacityTensor

/// One tile of a preview grid.
public struct PreviewTile: Sendable {
    /// The image (any size; tiles are scaled to the grid's tile size).
    public var image: GrayImage
    /// Boxes in the image's pixels, drawn in red.
    public var boxes: [BoundingBox]
    /// Scored boxes, drawn in green with their scores.
    public var detections: [Detection]
    /// A caption drawn in the tile's top-left corner.
    public var caption: String

    /// A tile.
    public init(image: GrayImage, boxes: [BoundingBox] = [], detections: [Detection] = [], caption: String = "") {
        self.image = image
        self.boxes = boxes
        self.detections = detections
        self.caption = caption
    }
}

/// Grids of images with their boxes, written as one PNG (augmentation previews,
/// detection galleries).
public enum PreviewGrid {
    /// Lays tiles out in a grid.
    /// - Parameters:
    ///   - tiles: the images, row-major.
    ///   - columns: tiles per row.
    ///   - tileSize: side of each tile in pixels (images are resized to it).
    ///   - padding: gap between tiles.
    /// - Returns: the grid image.
    public static func render(_ tiles: [PreviewTile], columns: Int, tileSize: Int, padding: Int = 4) -> RGBImage {
        let cols = max(1, min(columns, max(1, tiles.count)))
        let rows = max(1, (tiles.count + cols - 1) / cols)
        let W = cols * tileSize + (cols + 1) * padding, H = rows * tileSize + (rows + 1) * padding
        var grid = RGBImage(width: W, height: H, fill: RGBColor(r: 32, g: 32, b: 32))
        for (k, t) in tiles.enumerated() {
            let sx = Float(tileSize) / Float(t.image.width), sy = Float(tileSize) / Float(t.image.height)
            let img = t.image.resized(width: tileSize, height: tileSize)
            var rgb = img.toRGB()
            let thickness = max(1, tileSize / 200)
            for b in t.boxes { rgb.drawBox(b.rescaled(sx: sx, sy: sy), color: .red, thickness: thickness) }
            rgb.drawDetections(t.detections.map { Detection(box: $0.box.rescaled(sx: sx, sy: sy), score: $0.score) },
                               thickness: thickness)
            if !t.caption.isEmpty {
                let scale = max(1, tileSize / 256)
                rgb.drawText(t.caption, x: 2 * scale, y: 2 * scale, color: .yellow, scale: scale, background: .black)
            }
            let ox = padding + (k % cols) * (tileSize + padding), oy = padding + (k / cols) * (tileSize + padding)
            for y in 0..<tileSize {
                let src = 3 * y * tileSize, dst = 3 * ((oy + y) * W + ox)
                grid.pixels.replaceSubrange(dst..<(dst + 3 * tileSize), with: rgb.pixels[src..<(src + 3 * tileSize)])
            }
        }
        return grid
    }

    /// Augments records of a dataset and lays the results out with their mapped boxes.
    ///
    /// Tile `i` shows record `i % count` augmented with the generator `(seed, i)`; the
    /// first tile of each record is captioned with its class.
    /// - Parameters:
    ///   - dataset: the source.
    ///   - augmenter: the augmentation and output size.
    ///   - count: number of tiles.
    ///   - columns: tiles per row.
    ///   - seed: the seed.
    ///   - window: DICOM windowing.
    /// - Throws: image reading errors naming the file.
    public static func augmentations(of dataset: DetectionDataset, augmenter: Augmenter, count: Int, columns: Int,
                                     seed: UInt64 = 0, window: WindowSetting = .automatic) throws -> RGBImage {
        guard !dataset.records.isEmpty else {
            throw DataError.invalidParameter(name: "dataset", value: "empty", expected: "at least one image", nearest: nil)
        }
        var tiles: [PreviewTile] = []
        var cache: [String: GrayImage] = [:]
        for i in 0..<count {
            let r = dataset.records[i % dataset.records.count]
            guard let url = r.imageURL else {
                throw DataError.missingFile(path: r.id, expected: "an image for \(r.id)")
            }
            let src: GrayImage
            if let c = cache[r.id] { src = c } else {
                src = try ImageFile.read(url, window: window)
                cache[r.id] = src
            }
            var rng = RandomGenerator(seed: seed, stream: UInt64(i))
            let s = augmenter.apply(src, boxes: r.boxes, using: &rng)
            let name = r.imageClass?.shortName ?? (r.boxes.isEmpty ? "NO OPACITY" : ImageClass.lungOpacity.shortName)
            let caption = s.geometry.flip ? "\(name) FLIP" : name
            tiles.append(PreviewTile(image: s.image.to8Bit(), boxes: s.boxes, caption: caption))
        }
        return render(tiles, columns: columns, tileSize: augmenter.outputSize)
    }
}

extension ImageClass {
    /// A short caption: `OPACITY`, `NOT NORMAL` or `NORMAL`.
    public var shortName: String {
        switch self {
        case .lungOpacity: return "OPACITY"
        case .notNormal: return "NOT NORMAL"
        case .normal: return "NORMAL"
        }
    }
}
