#ifndef OPACITY_COPENJPEG_SHIM_H
#define OPACITY_COPENJPEG_SHIM_H
#include <openjpeg.h>
#endif
