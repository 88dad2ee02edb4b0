import OpacityCore
/// The version of the Opacity framework, written into every bundle's metadata.
public enum FrameworkVersion {
    /// Semantic version of this build of Opacity (one source: `DynamicPluginABI.opacityVersion`).
    public static let current = DynamicPluginABI.opacityVersion
}
