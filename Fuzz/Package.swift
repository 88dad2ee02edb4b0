// swift-tools-version: 6.0
//
// libFuzzer targets for Opacity's parsers. Every file `Targets/NAME.swift` is one fuzz
// target, built as the executable `fuzz-NAME` (adding a target is adding one file); its
// seeds are `Seeds/NAME/` plus what scripts/fuzz.sh gathers from ../shared/realdata.
//
// Build and run with scripts/fuzz.sh (it passes `-Xswiftc -sanitize=fuzzer`, so the
// Opacity modules are instrumented for coverage too). Not part of the product.
import Foundation
import PackageDescription

let here = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
let files = ((try? FileManager.default.contentsOfDirectory(atPath: here.appendingPathComponent("Targets").path)) ?? [])
    .filter { $0.hasSuffix(".swift") && $0 != "FuzzSupport.swift" }.sorted()

let package = Package(
    name: "OpacityFuzz",
    dependencies: [.package(name: "Opacity", path: "..")],
    targets: [
        .target(name: "FuzzSupport", dependencies: [.product(name: "Opacity", package: "Opacity")], path: "Support"),
    ] + files.map { f in
        .executableTarget(
            name: "fuzz-" + f.dropLast(".swift".count), dependencies: ["FuzzSupport", .product(name: "Opacity", package: "Opacity")],
            path: "Targets", exclude: files.filter { $0 != f }, sources: [f], swiftSettings: [.unsafeFlags(["-parse-as-library"])])
    },
    swiftLanguageModes: [.v6]
)
