package main

import (
	"errors"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/cohort-dev/cohort/internal/gpu"
	"github.com/spf13/cobra"
)

func init() { registerCommand(newGPUCmd) }

func newGPUCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "gpu",
		Short: "Inspect this machine's GPUs",
	}
	cmd.AddCommand(newGPUInfoCmd(g))
	return cmd
}

// gpuInfo is the JSON form of `cohort gpu info`.
type gpuInfo struct {
	Usable int `json:"usable"`
	gpu.Inventory
	Probe      *gpu.Props `json:"probe,omitempty"`
	ProbeError string     `json:"probe_error,omitempty"`
}

func newGPUInfoCmd(g *globalFlags) *cobra.Command {
	var probe, require bool
	var ordinal int
	cmd := &cobra.Command{
		Use:   "info",
		Short: "List the GPUs this node would offer, or why it offers none",
		Long: `List the GPUs found through NVML and check that libcuda, libcublas and libnvrtc
load. A node without them offers 0 GPUs; the reason is printed. Directories in
$COHORT_CUDA_LIBRARY_PATH are searched before the system's.

--probe also opens one GPU: it retains its primary context and compiles Cohort's
kernels with NVRTC for it.`,
		Example: `  cohort gpu info
  cohort gpu info --probe --device 1 -o json
  cohort gpu info --require   # exit 1 when this node would offer no GPU`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(g); err != nil {
				return err
			}
			info := gpuInfo{Inventory: gpu.Discover()}
			info.Usable = info.Inventory.Usable()
			if probe && info.Usable > 0 {
				cfg := gpu.DefaultConfig()
				cfg.Ordinal = ordinal
				d, err := gpu.Open(cfg)
				if err != nil {
					info.ProbeError = err.Error()
				} else {
					p := d.Props()
					info.Probe = &p
					if err := d.Close(); err != nil {
						info.ProbeError = err.Error()
					}
				}
			}
			out := cmd.OutOrStdout()
			var err error
			if g.output == "json" {
				err = printJSON(out, info)
			} else {
				err = printGPUTable(out, info)
			}
			if err != nil {
				return err
			}
			if require && (info.Usable == 0 || info.ProbeError != "") {
				return errors.New("no usable GPU")
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&probe, "probe", false, "also open a GPU and compile the kernels for it")
	cmd.Flags().IntVar(&ordinal, "device", 0, "which GPU --probe opens")
	cmd.Flags().BoolVar(&require, "require", false, "exit 1 when no GPU is usable")
	return cmd
}

func printGPUTable(w io.Writer, info gpuInfo) error {
	if len(info.Devices) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "INDEX\tNAME\tMEMORY\tCOMPUTE\tUUID")
		for _, d := range info.Devices {
			fmt.Fprintf(tw, "%d\t%s\t%d MiB\t%s\t%s\n", d.Index, d.Name, d.MemoryTotalBytes>>20, d.ComputeCapability, d.UUID)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if info.DriverVersion != "" {
		fmt.Fprintf(w, "driver %s (CUDA %s)\n", info.DriverVersion, gpu.FormatCUDAVersion(info.CUDADriverVersion))
	}
	for _, l := range info.Libraries {
		fmt.Fprintf(w, "library %s\n", l)
	}
	fmt.Fprintf(w, "usable GPUs: %d\n", info.Usable)
	if info.Reason != "" {
		fmt.Fprintf(w, "reason: %s\n", info.Reason)
	}
	if p := info.Probe; p != nil {
		fmt.Fprintf(w, "probe: %s, compute %d.%d, %d SMs, kernels built for %s (NVRTC %s, cuBLAS %d)\n",
			p.Name, p.Major, p.Minor, p.Multiprocessors, p.KernelTarget, gpu.FormatCUDAVersion(p.NVRTCVersion), p.CublasVersion)
	}
	if info.ProbeError != "" {
		fmt.Fprintf(w, "probe failed: %s\n", info.ProbeError)
	}
	return nil
}
