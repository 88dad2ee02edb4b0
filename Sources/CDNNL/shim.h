#ifndef OPACITY_CDNNL_SHIM_H
#define OPACITY_CDNNL_SHIM_H
// oneDNN's C API (Debian's libdnnl-dev 2.6; no pkg-config file, so the module map links
// "dnnl" by name).
#include <oneapi/dnnl/dnnl.h>
#include <dlfcn.h>

// Debian builds oneDNN with the OpenMP runtime (DNNL_CPU_RUNTIME == DNNL_RUNTIME_OMP): its
// primitives run on the calling thread's OpenMP team, sized by that thread's nthreads-var.
// libgomp is a dependency of libdnnl, not of ours, so omp_set_num_threads is looked up in
// the loaded objects rather than linked (there is no libgomp.so link name on the library
// path). Returns 0 when the symbol is absent (a oneDNN built with another runtime).
static inline int opacity_dnnl_set_omp_threads(int n) {
    typedef void (*set_fn)(int);
    static set_fn fn = 0;
    static int looked = 0;
    if (!looked) {
        fn = (set_fn)dlsym((void *)0 /* RTLD_DEFAULT */, "omp_set_num_threads");
        looked = 1;
    }
    if (!fn) return 0;
    fn(n);
    return 1;
}
#endif
