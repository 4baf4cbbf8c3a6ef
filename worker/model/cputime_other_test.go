//go:build !unix

package model

import "time"

func processCPU() time.Duration { return 0 }
