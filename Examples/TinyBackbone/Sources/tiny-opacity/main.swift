// `opacity` with TinyBackbone in every command: `tiny-opacity plugins` lists it, and
// `tiny-opacity train --config "retinanet(encoder=tiny_backbone, size=64)" ...` trains on it.
import OpacityCLI
import TinyBackbone

OpacityMain.run(plugins: builtinPlugins + [TinyBackbonePlugin.self])
