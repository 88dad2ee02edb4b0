#ifndef OPACITY_CBLAS_SHIM_H
#define OPACITY_CBLAS_SHIM_H
#include <cblas.h>
#endif
