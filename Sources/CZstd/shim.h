#ifndef OPACITY_CZSTD_SHIM_H
#define OPACITY_CZSTD_SHIM_H
#include <zstd.h>
#endif
