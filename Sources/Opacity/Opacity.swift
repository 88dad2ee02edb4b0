// The umbrella module: `import Opacity` brings the whole framework and its built-in plugins.
@_exported import OpacityTensor
@_exported import OpacityCore
@_exported import OpacityPersistence
@_exported import OpacityData
@_exported import OpacityTraining
@_exported import OpacityResNet
@_exported import OpacityFPN
@_exported import OpacityRetinaNet
@_exported import OpacitySEResNeXt
@_exported import OpacityXception
@_exported import OpacityDPN
@_exported import OpacityNASNet
@_exported import OpacityONNX

/// The plugins that ship with Opacity, in registration order.
///
/// This is the one place that lists them; the `opacity` command and ``Registry/standard()``
/// use it. A program with plugins of its own passes a longer list to ``Registry/init(plugins:)``.
public var builtinPlugins: [any OpacityPlugin.Type] {
    [
        ResNetPlugin.self,
        FPNPlugin.self,
        RetinaNetPlugin.self,
        SEResNeXtPlugin.self,
        XceptionPlugin.self,
        DPNPlugin.self,
        NASNetPlugin.self,
    ]
}

extension Registry {
    /// A registry with the built-in plugins.
    public static func standard() throws -> Registry { try Registry(plugins: builtinPlugins) }
}
