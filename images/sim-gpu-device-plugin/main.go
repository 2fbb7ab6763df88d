// Command sim-gpu-device-plugin advertises simulated NVIDIA GPUs to a kubelet through the device-plugin API
// (k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1), so that GPU-requesting pods run as real containers on a node
// without GPUs while the scheduler still counts the slots. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

func main() { os.Exit(run(os.Args[1:], os.Getenv, os.Stderr)) }

// run is main without the exit: 0 after SIGTERM/SIGINT, 2 for bad settings, 1 when serving failed.
func run(args []string, getenv func(string) string, stderr io.Writer) int {
	log := slog.New(slog.NewTextHandler(stderr, nil))
	cfg, err := parseConfig(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "sim-gpu-device-plugin: "+err.Error())
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := Run(ctx, cfg, log); err != nil {
		log.Error("failed", "error", err)
		return 1
	}
	return 0
}
