// The umbrella module: `import Opacity` brings the whole framework.
@_exported import OpacityTensor
@_exported import OpacityCore
@_exported import OpacityData
@_exported import OpacityTraining
