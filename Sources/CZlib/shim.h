#ifndef OPACITY_CZLIB_SHIM_H
#define OPACITY_CZLIB_SHIM_H
#include <zlib.h>
#endif
