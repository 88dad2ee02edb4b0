@_exported import OpacityTensor
