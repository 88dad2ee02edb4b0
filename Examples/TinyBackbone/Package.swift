// swift-tools-version: 6.0
//
// An Opacity backbone plugin in a package of its own: the TinyBackbone library (the encoder
// and its plugin, one file), a demo that trains a RetinaNet on it through the public API, and
// tiny-opacity: the `opacity` command line with the backbone in every command; and the same
// encoder as a plugin library, libTinyBackbonePlugin.so, that the stock `opacity` loads with
// `--plugin` (built against Opacity's shared library product, OpacityDynamic).
// See Documentation/AddingABackbone.md.
//
// Outside this repository, depend on Opacity by URL instead:
//     .package(url: "https://example.org/opacity.git", from: "1.0.0")
// and name the product's package after that URL's last path component.
import Foundation
import PackageDescription

/// SwiftPM names a path dependency after its directory, so take the checkout's name.
let opacityPath = "../.."
let opacityPackage = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent(opacityPath).standardizedFileURL.lastPathComponent

let package = Package(
    name: "TinyBackbone",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "TinyBackbone", targets: ["TinyBackbone"]),
        // `opacity train --plugin .build/release/libTinyBackbonePlugin.so --config "retinanet(encoder=tiny_backbone)" ...`
        .library(name: "TinyBackbonePlugin", type: .dynamic, targets: ["TinyBackbonePlugin"]),
    ],
    dependencies: [.package(path: opacityPath)],
    targets: [
        .target(name: "TinyBackbone", dependencies: [.product(name: "Opacity", package: opacityPackage)]),
        .executableTarget(name: "tiny-backbone-demo",
                          dependencies: ["TinyBackbone", .product(name: "Opacity", package: opacityPackage)]),
        // The whole `opacity` command line with TinyBackbone registered (three lines of code).
        .executableTarget(name: "tiny-opacity",
                          dependencies: ["TinyBackbone", .product(name: "OpacityCLI", package: opacityPackage)]),
        // The same encoder source (a link to TinyBackbone.swift) and the C entry point
        // opacity_plugin_v1, linked against libOpacityDynamic.so, never a copy of Opacity.
        .target(name: "TinyBackbonePlugin",
                dependencies: [.product(name: "OpacityDynamic", package: opacityPackage)]),
    ],
    swiftLanguageModes: [.v6]
)
