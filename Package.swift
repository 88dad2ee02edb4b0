// swift-tools-version: 6.1
//
// Opacity: lung-opacity detection on chest X-rays with single-shot detectors.
//
// Layers (a lower layer never imports a higher one; siblings do not import each other):
//   C libraries -> OpacityTensor -> OpacityCore -> { Plugins/*, OpacityPersistence, OpacityData }
//   OpacityPersistence + OpacityData -> OpacityTraining;  OpacityRetinaNet -> OpacityONNX (export)
//   all of them -> Opacity (umbrella)
//   -> OpacityServe (the HTTP service) -> OpacityCLI -> opacity
// Plugins depend on OpacityTensor and OpacityCore only (the two library products a backbone
// package needs); persistence (bundles, checkpoints, zoo, weight import, zstd) sits beside them.
// See Documentation/Architecture.md.
import PackageDescription

// MARK: - System libraries (Debian -dev packages)

let systemLibraries: [Target] = [
    .systemLibrary(
        name: "CBLAS", path: "Sources/CBLAS", pkgConfig: "openblas",
        providers: [.apt(["libopenblas-dev"])]),
    .systemLibrary(
        name: "CPNG", path: "Sources/CPNG", pkgConfig: "libpng",
        providers: [.apt(["libpng-dev"])]),
    .systemLibrary(
        name: "CZstd", path: "Sources/CZstd", pkgConfig: "libzstd",
        providers: [.apt(["libzstd-dev"])]),
    .systemLibrary(
        name: "CJPEG", path: "Sources/CJPEG", pkgConfig: "libturbojpeg",
        providers: [.apt(["libturbojpeg0-dev"])]),
    .systemLibrary(
        name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib",
        providers: [.apt(["zlib1g-dev"])]),
    .systemLibrary(
        name: "COpenJPEG", path: "Sources/COpenJPEG", pkgConfig: "libopenjp2",
        providers: [.apt(["libopenjp2-7-dev"])]),
    .systemLibrary(
        name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi-c",
        providers: [.apt(["libopenmpi-dev"])]),
    // oneDNN 2.6, a candidate convolution provider (Kernels/DNNL); Debian ships no .pc file.
    .systemLibrary(
        name: "CDNNL", path: "Sources/CDNNL",
        providers: [.apt(["libdnnl-dev"])]),
]

// MARK: - Framework layers

let core: [Target] = [
    .target(name: "OpacityTensor", dependencies: ["CBLAS", "CDNNL"]),
    .target(name: "OpacityCore", dependencies: ["OpacityTensor"]),
    .target(name: "OpacityPersistence", dependencies: [
        "OpacityTensor", "OpacityCore", "CZstd", "CZlib", .product(name: "Crypto", package: "swift-crypto"),
    ]),
    .target(
        name: "OpacityData",
        dependencies: ["OpacityTensor", "OpacityCore", "CPNG", "CJPEG", "CZlib", "COpenJPEG", .product(name: "CSV", package: "CSV.swift")]),
    .target(name: "OpacityTraining", dependencies: ["OpacityTensor", "OpacityCore", "OpacityPersistence", "OpacityData"]),
    // Data-parallel training and sharded inference over Open MPI (Documentation/Distributed.md).
    .target(name: "OpacityDistributed", dependencies: ["CMPI", "OpacityTensor", "OpacityCore", "OpacityData", "OpacityTraining"]),
]

// MARK: - Plugins: one target per family, each registers its names

let pluginNames = ["ResNet", "FPN", "RetinaNet", "SEResNeXt", "Xception", "DPN", "NASNet"]
let plugins: [Target] = pluginNames.map { name in
    .target(
        name: "Opacity\(name)", dependencies: ["OpacityTensor", "OpacityCore"],
        path: "Plugins/\(name)")
}
let pluginProducts: [Target.Dependency] = pluginNames.map { .target(name: "Opacity\($0)") }

// MARK: - Exporters (above the plugins: they read detectors built from any of them)

let exporters: [Target] = [
    .target(name: "OpacityONNX", dependencies: ["OpacityTensor", "OpacityCore", "OpacityRetinaNet"]),
]

// MARK: - Umbrella, CLI and benchmarks

let apps: [Target] = [
    .target(
        name: "Opacity",
        dependencies: ["OpacityTensor", "OpacityCore", "OpacityPersistence", "OpacityData", "OpacityTraining", "OpacityONNX"]
            + pluginProducts),
    // The HTTP detection service (`opacity serve`) and the detection report it shares with `opacity detect`.
    .target(
        name: "OpacityServe",
        dependencies: [
            "Opacity",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
    .target(
        name: "OpacityCLI",
        dependencies: ["Opacity", "OpacityServe", "OpacityDistributed", .product(name: "ArgumentParser", package: "swift-argument-parser")]),
    // Exports every symbol and answers to the name libOpacityDynamic.so (lld writes DT_SONAME in
    // an executable, gold does not), so a plugin loaded with --plugin binds its OpacityDynamic
    // dependency to this executable's own types and state (Documentation/AddingABackbone.md).
    .executableTarget(
        name: "opacity", dependencies: ["OpacityCLI"],
        linkerSettings: [
            .unsafeFlags(
                ["-use-ld=lld", "-Xlinker", "--export-dynamic", "-Xlinker", "-soname", "-Xlinker", "libOpacityDynamic.so"],
                .when(platforms: [.linux]))
        ]),
    // The README's Swift example, compiled and run by ReadmeSnippetTests.
    .executableTarget(name: "readme-snippet", dependencies: ["Opacity"], path: "Examples/ReadmeSnippet"),
    // Real RSNA opacities next to synthetic ones (Documentation/images/synthetic-opacities.png).
    .executableTarget(name: "synth-contact-sheet", dependencies: ["Opacity"], path: "Examples/SynthContactSheet"),
    .executableTarget(
        name: "opacity-bench", dependencies: ["Opacity", "OpacityDistributed", .product(name: "ArgumentParser", package: "swift-argument-parser")]),
]

// MARK: - Tests

let tests: [Target] = [
    .testTarget(name: "OpacityTensorTests", dependencies: ["OpacityTensor"]),
    .testTarget(name: "OpacityCoreTests", dependencies: ["OpacityCore"]),
    .testTarget(name: "OpacityPersistenceTests", dependencies: ["OpacityCore", "OpacityPersistence", "OpacityResNet", "OpacitySEResNeXt"]),
    .testTarget(name: "OpacityDataTests", dependencies: ["OpacityData", "OpacityPersistence"], exclude: ["Fixtures"]),
    .testTarget(name: "OpacityPluginTests", dependencies: ["Opacity"], exclude: ["Fixtures"]),
    .testTarget(name: "OpacityTrainingTests", dependencies: ["Opacity"], exclude: ["Fixtures"]),
    .testTarget(name: "OpacityCLITests", dependencies: ["Opacity"], exclude: ["Help"]),
    .testTarget(name: "OpacityONNXTests", dependencies: ["Opacity"]),
    .testTarget(name: "OpacityServeTests", dependencies: ["OpacityServe"]),
]

let package = Package(
    name: "Opacity",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "Opacity", targets: ["Opacity"]),
        .library(name: "OpacityCLI", targets: ["OpacityCLI"]),
        // What a backbone package needs: the tensor engine and the detection vocabulary.
        .library(name: "OpacityTensor", targets: ["OpacityTensor"]),
        .library(name: "OpacityCore", targets: ["OpacityCore"]),
        // The same two as a shared library, libOpacityDynamic.so: what a plugin loaded with
        // `opacity --plugin` links against (the stock `opacity` provides its symbols).
        .library(name: "OpacityDynamic", type: .dynamic, targets: ["OpacityTensor", "OpacityCore"]),
        .executable(name: "opacity", targets: ["opacity"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/yaslab/CSV.swift", from: "2.5.2"),
        // `opacity serve`; no traits: swift-configuration is not needed (shorter clean builds).
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1", traits: []),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
    ],
    targets: systemLibraries + core + plugins + exporters + apps + tests,
    swiftLanguageModes: [.v6]
)
