import Foundation
import OpacityCore

/// Drawing boxes, scores and labels on RGB images (detections, ground truth, previews).
extension RGBImage {
    /// Sets one pixel if it is inside the image.
    @inline(__always)
    public mutating func setPixel(x: Int, y: Int, _ color: RGBColor) {
        guard x >= 0, y >= 0, x < width, y < height else { return }
        let i = 3 * (y * width + x)
        pixels[i] = color.r
        pixels[i + 1] = color.g
        pixels[i + 2] = color.b
    }

    /// Fills a rectangle (clipped to the image).
    public mutating func fillRect(x: Int, y: Int, width w: Int, height h: Int, _ color: RGBColor) {
        let x0 = max(0, x), y0 = max(0, y), x1 = min(width, x + w), y1 = min(height, y + h)
        guard x0 < x1, y0 < y1 else { return }
        for yy in y0..<y1 { for xx in x0..<x1 { setPixel(x: xx, y: yy, color) } }
    }

    /// Draws the outline of a box (clipped to the image).
    /// - Parameters:
    ///   - box: in this image's pixels.
    ///   - color: the line colour.
    ///   - thickness: line width in pixels, drawn inwards from the box edge.
    public mutating func drawBox(_ box: BoundingBox, color: RGBColor, thickness: Int = 2) {
        let x0 = Int(box.x.rounded()), y0 = Int(box.y.rounded())
        let x1 = Int(box.x2.rounded()), y1 = Int(box.y2.rounded())
        let t = max(1, thickness)
        fillRect(x: x0, y: y0, width: x1 - x0, height: t, color)
        fillRect(x: x0, y: y1 - t, width: x1 - x0, height: t, color)
        fillRect(x: x0, y: y0, width: t, height: y1 - y0, color)
        fillRect(x: x1 - t, y: y0, width: t, height: y1 - y0, color)
    }

    /// Draws text with the built-in 5x7 bitmap font (digits, A-Z, a-z shown as capitals,
    /// and `. , : - + % / ( ) = _ #` and space); unknown characters draw as a box.
    /// - Parameters:
    ///   - text: the string.
    ///   - x: left edge.
    ///   - y: top edge.
    ///   - color: text colour.
    ///   - scale: pixel size of one font dot.
    ///   - background: when set, a filled rectangle behind the text.
    public mutating func drawText(_ text: String, x: Int, y: Int, color: RGBColor, scale: Int = 2, background: RGBColor? = nil) {
        let s = max(1, scale)
        let chars = Array(text.uppercased())
        if let bg = background {
            fillRect(x: x - s, y: y - s, width: chars.count * 6 * s + s, height: 9 * s, bg)
        }
        for (k, ch) in chars.enumerated() {
            let glyph = BitmapFont.glyph(ch)
            for row in 0..<7 {
                let bits = glyph[row]
                for col in 0..<5 where bits & (1 << (4 - col)) != 0 {
                    fillRect(x: x + (k * 6 + col) * s, y: y + row * s, width: s, height: s, color)
                }
            }
        }
    }

    /// Width in pixels of `text` drawn at `scale`.
    public static func textWidth(_ text: String, scale: Int = 2) -> Int { text.count * 6 * max(1, scale) }

    /// Draws detections: each box with its score (two decimals) above it.
    /// - Parameters:
    ///   - detections: scored boxes in this image's pixels.
    ///   - color: box and label colour.
    ///   - thickness: line width.
    public mutating func drawDetections(_ detections: [Detection], color: RGBColor = .green, thickness: Int = 2) {
        let scale = max(1, min(width, height) / 256)
        for d in detections {
            drawBox(d.box, color: color, thickness: thickness)
            let label = String(format: "%.2f", d.score)
            let ty = Int(d.box.y.rounded()) - 9 * scale - thickness
            drawText(label, x: Int(d.box.x.rounded()) + scale, y: max(scale, ty), color: .black, scale: scale, background: color)
        }
    }
}

extension GrayImage {
    /// The image as RGB with boxes drawn: `truth` in red, `detections` in green with scores.
    public func overlay(truth: [BoundingBox] = [], detections: [Detection] = [], thickness: Int = 2) -> RGBImage {
        var rgb = toRGB()
        for b in truth { rgb.drawBox(b, color: .red, thickness: thickness) }
        rgb.drawDetections(detections, color: .green, thickness: thickness)
        return rgb
    }
}

/// A 5x7 bitmap font: each glyph is 7 rows of 5 bits (most significant bit left).
enum BitmapFont {
    static func glyph(_ c: Character) -> [UInt8] {
        glyphs[c] ?? [0x1F, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1F]
    }

    static let glyphs: [Character: [UInt8]] = [
        " ": [0, 0, 0, 0, 0, 0, 0],
        "0": [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        "1": [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        "2": [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        "3": [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        "4": [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        "5": [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        "6": [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        "7": [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        "8": [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        "9": [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        "A": [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        "B": [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        "C": [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        "D": [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        "E": [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        "F": [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        "G": [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        "H": [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        "I": [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        "J": [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        "K": [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        "L": [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        "M": [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        "N": [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        "O": [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        "P": [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        "Q": [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        "R": [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        "S": [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        "T": [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        "U": [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        "V": [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        "W": [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        "X": [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        "Y": [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        "Z": [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        ".": [0, 0, 0, 0, 0, 0x0C, 0x0C],
        ",": [0, 0, 0, 0, 0x0C, 0x04, 0x08],
        ":": [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        "-": [0, 0, 0, 0x1F, 0, 0, 0],
        "+": [0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0],
        "%": [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        "/": [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0],
        "(": [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ")": [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        "=": [0, 0, 0x1F, 0, 0x1F, 0, 0],
        "_": [0, 0, 0, 0, 0, 0, 0x1F],
        "#": [0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A],
    ]
}
