import Foundation

/// An axis-aligned box in pixel coordinates: top-left corner, width and height
/// (the RSNA CSV convention). Continuous coordinates, no `+1`.
public struct BoundingBox: Hashable, Codable, Sendable, CustomStringConvertible {
    public var x: Float
    public var y: Float
    public var width: Float
    public var height: Float

    public init(x: Float, y: Float, width: Float, height: Float) {
        self.x = x
        self.y = y
        self.width = width
        self.height = height
    }

    /// A box from corners `(x1, y1, x2, y2)`.
    public init(x1: Float, y1: Float, x2: Float, y2: Float) {
        self.init(x: x1, y: y1, width: x2 - x1, height: y2 - y1)
    }

    public var x2: Float { x + width }
    public var y2: Float { y + height }
    public var centerX: Float { x + width / 2 }
    public var centerY: Float { y + height / 2 }
    public var area: Float { max(0, width) * max(0, height) }

    /// Intersection over union with continuous coordinates; 0 when either box is empty or
    /// they do not overlap (the challenge metric's rule).
    public func iou(_ o: BoundingBox) -> Float {
        if width <= 0 || height <= 0 || o.width <= 0 || o.height <= 0 { return 0 }
        let l = max(x, o.x), r = min(x2, o.x2), t = max(y, o.y), b = min(y2, o.y2)
        if r <= l || b <= t { return 0 }
        let inter = (r - l) * (b - t)
        return inter / (area + o.area - inter)
    }

    /// The box scaled by `factor` about its centre (e.g. 0.875 for the paper's shrink).
    public func scaled(about factor: Float) -> BoundingBox {
        let w = width * factor, h = height * factor
        return BoundingBox(x: centerX - w / 2, y: centerY - h / 2, width: w, height: h)
    }

    /// The box with all coordinates multiplied by `sx`, `sy` (e.g. 512 -> 1024 pixels).
    public func rescaled(sx: Float, sy: Float) -> BoundingBox {
        BoundingBox(x: x * sx, y: y * sy, width: width * sx, height: height * sy)
    }

    public var description: String { String(format: "(x %.1f, y %.1f, w %.1f, h %.1f)", x, y, width, height) }
}

/// A scored box.
public struct Detection: Hashable, Codable, Sendable {
    public var box: BoundingBox
    public var score: Float
    public init(box: BoundingBox, score: Float) {
        self.box = box
        self.score = score
    }
}

/// The three image-level classes of the RSNA challenge, in the paper's index order.
public enum ImageClass: Int, CaseIterable, Codable, Sendable, CustomStringConvertible {
    /// "No Lung Opacity / Not Normal"
    case notNormal = 0
    /// "Normal"
    case normal = 1
    /// "Lung Opacity" (the only class with boxes)
    case lungOpacity = 2

    /// The label as written in `stage_2_detailed_class_info.csv`.
    public var label: String {
        switch self {
        case .notNormal: return "No Lung Opacity / Not Normal"
        case .normal: return "Normal"
        case .lungOpacity: return "Lung Opacity"
        }
    }

    /// Parses a label from the class-info CSV.
    public init?(label: String) {
        guard let c = ImageClass.allCases.first(where: { $0.label == label }) else { return nil }
        self = c
    }

    public var description: String { label }
}

/// What the detector is trained to predict for one image: its boxes (in the pixels of the
/// image as fed to the network) and its global class.
public struct DetectionTarget: Sendable, Equatable {
    public var boxes: [BoundingBox]
    /// The image-level class, or `nil` when the labels do not say it (RSNA labels without
    /// the class-info file, a boxes CSV without a class column): such an image is known only
    /// to be "Lung Opacity" (it has boxes) or not (it has none), see ``knownLungOpacity``.
    public var imageClass: ImageClass?
    public init(boxes: [BoundingBox], imageClass: ImageClass?) {
        self.boxes = boxes
        self.imageClass = imageClass
    }

    /// The class as far as the labels tell it: ``imageClass``, else "Lung Opacity" when the
    /// image has boxes (only that class has boxes), else `nil` (one of the two other classes).
    public var knownClass: ImageClass? { imageClass ?? (boxes.isEmpty ? nil : .lungOpacity) }

    /// Whether the image is "Lung Opacity": always known, from the class or from the boxes.
    public var knownLungOpacity: Bool { knownClass == .lungOpacity }
}
