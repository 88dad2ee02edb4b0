#ifndef OPACITY_CMPI_SHIM_H
#define OPACITY_CMPI_SHIM_H
// Open MPI's C interface (Debian libopenmpi-dev, pkg-config name ompi-c). Open MPI spells
// its predefined handles as macros over global objects, which Swift cannot import; the
// inline functions below hand them to Swift.
#define OMPI_SKIP_MPICXX 1
#include <mpi.h>

static inline MPI_Comm opacity_mpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Comm opacity_mpi_comm_null(void) { return MPI_COMM_NULL; }
static inline MPI_Datatype opacity_mpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype opacity_mpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Datatype opacity_mpi_byte(void) { return MPI_BYTE; }
static inline MPI_Datatype opacity_mpi_int64(void) { return MPI_INT64_T; }
static inline MPI_Op opacity_mpi_sum(void) { return MPI_SUM; }
static inline MPI_Op opacity_mpi_max(void) { return MPI_MAX; }
static inline MPI_Request opacity_mpi_request_null(void) { return MPI_REQUEST_NULL; }
static inline MPI_Status *opacity_mpi_status_ignore(void) { return MPI_STATUS_IGNORE; }
static inline void *opacity_mpi_in_place(void) { return MPI_IN_PLACE; }
static inline MPI_Errhandler opacity_mpi_errors_return(void) { return MPI_ERRORS_RETURN; }
static inline int opacity_mpi_success(void) { return MPI_SUCCESS; }
static inline int opacity_mpi_max_error_string(void) { return MPI_MAX_ERROR_STRING; }
static inline int opacity_mpi_thread_multiple(void) { return MPI_THREAD_MULTIPLE; }
static inline int opacity_mpi_thread_serialized(void) { return MPI_THREAD_SERIALIZED; }

#endif
