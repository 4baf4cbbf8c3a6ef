// Package openblas binds OpenBLAS's single-precision matrix product for the models'
// optional BLAS build: with -tags openblas (and cgo, and libopenblas-dev installed) the
// model package computes its GEMMs here instead of in its own Go/assembly kernels.
// Without the tag the package is empty. Set OPENBLAS_NUM_THREADS=1: the models
// parallelise over their own goroutines.
package openblas
