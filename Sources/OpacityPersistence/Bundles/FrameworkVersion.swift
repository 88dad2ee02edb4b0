import OpacityCore
/// The version of the Opacity framework, written into every bundle's metadata.
public enum FrameworkVersion {
    /// Semantic version of this build of Opacity.
    public static let current = "0.1.0"
}
