// The C entry point that `opacity --plugin libTinyBackbonePlugin.so` looks up: it hands the
// loader the plugin types and the versions this library was built against.
import OpacityCore

/// The entry of this plugin library (`opacity_plugin_v1`, Documentation/AddingABackbone.md).
@_cdecl("opacity_plugin_v1")
public func opacityPluginV1() -> UnsafeMutableRawPointer {
    DynamicPluginABI.descriptor(plugins: [TinyBackbonePlugin.self])
}
