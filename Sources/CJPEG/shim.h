#ifndef OPACITY_CJPEG_SHIM_H
#define OPACITY_CJPEG_SHIM_H
// libjpeg-turbo through its TurboJPEG API: errors come back as return codes
// (no setjmp/longjmp across Swift frames).
#include <turbojpeg.h>
#endif
