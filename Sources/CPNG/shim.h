#ifndef OPACITY_CPNG_SHIM_H
#define OPACITY_CPNG_SHIM_H
#include <png.h>
#endif
