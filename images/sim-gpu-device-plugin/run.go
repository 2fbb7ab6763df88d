package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// fileID tells one incarnation of a file from the next: a socket deleted and created again may get the same inode
// number, but not the same inode and change time.
type fileID struct {
	dev, ino  uint64
	ctimeNsec int64
}

// statSocket returns the ID of the unix socket at path, or ok false when there is none.
func statSocket(path string) (fileID, bool) {
	fi, err := os.Stat(path)
	if err != nil || fi.Mode()&fs.ModeSocket == 0 {
		return fileID{}, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, false
	}
	return fileID{dev: uint64(st.Dev), ino: uint64(st.Ino), ctimeNsec: st.Ctim.Nano()}, true
}

// pluginServer is one incarnation of the plugin's gRPC server on its socket.
type pluginServer struct {
	plugin *devicePlugin
	grpc   *grpc.Server
	id     fileID
	done   chan error // receives Serve's result
}

func startServer(cfg Config, log *slog.Logger) (*pluginServer, error) {
	path := cfg.SocketPath()
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket: %w", err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	// The socket is removed by stop, and only while it is still this incarnation's.
	ln.SetUnlinkOnClose(false)
	id, ok := statSocket(path)
	if !ok {
		_ = ln.Close()
		return nil, fmt.Errorf("socket %s vanished right after listen", path)
	}
	s := &pluginServer{plugin: newDevicePlugin(cfg, log), grpc: grpc.NewServer(), id: id, done: make(chan error, 1)}
	pluginapi.RegisterDevicePluginServer(s.grpc, s.plugin)
	go func() { s.done <- s.grpc.Serve(ln) }()
	return s, nil
}

// stop ends the streams and the server, and removes the socket if it is still this server's.
func (s *pluginServer) stop(path string) {
	close(s.plugin.stop)
	s.grpc.Stop()
	if id, ok := statSocket(path); ok && id == s.id {
		_ = os.Remove(path)
	}
}

// register sends the kubelet the RegisterRequest; the kubelet dials the plugin's socket back and asks for the
// options before it answers, so the server must be serving.
func register(ctx context.Context, cfg Config) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.RegisterTimeout)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+cfg.KubeletSocketPath(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     cfg.SocketName,
		ResourceName: cfg.ResourceName,
		Options:      pluginOptions(),
	})
	return err
}

// A refused or failed registration is retried after 250ms, then twice as late each time, at most every 30s (a
// kubelet.sock can exist a moment before the kubelet listens on it).
const (
	minRegisterBackoff = 250 * time.Millisecond
	maxRegisterBackoff = 30 * time.Second
)

// Run serves the plugin until ctx ends: it keeps its socket served, registers with the kubelet whenever there is a
// kubelet.sock it has not registered with (a kubelet restart creates a new one and wipes the plugin's socket: the
// server is then restarted before registering, as NVIDIA's plugin restarts on kubelet.sock creation), and removes
// its socket when it returns.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	own, kubelet := cfg.SocketPath(), cfg.KubeletSocketPath()
	log.Info("start", "resource", cfg.ResourceName, "gpus", cfg.GPUs, "replicas", cfg.Replicas,
		"devices", cfg.GPUs*cfg.Replicas, "kubelet_dir", cfg.KubeletDir, "socket", cfg.SocketName)

	watcher, err := fsnotify.NewWatcher()
	if err != nil {
		log.Warn("no inotify watcher; polling only", "error", err, "interval", cfg.PollInterval)
		watcher = nil
	}
	var events <-chan fsnotify.Event
	var watchErrs <-chan error
	if watcher != nil {
		defer watcher.Close()
		events, watchErrs = watcher.Events, watcher.Errors
	}
	tick := time.NewTicker(cfg.PollInterval)
	defer tick.Stop()

	var (
		srv        *pluginServer
		serveDone  <-chan error
		registered fileID // the kubelet.sock registered with; zero: not registered
		backoff    time.Duration
		nextTry    time.Time
		retry      <-chan time.Time // fires at nextTry after a failed registration
		failedOn   fileID           // the kubelet.sock the last registration failed on
		lastErr    string           // the last problem logged, so that a waiting plugin logs it once
	)
	problem := func(msg string, args ...any) {
		if s := fmt.Sprint(msg, args); s != lastErr {
			lastErr = s
			log.Warn(msg, args...)
		}
	}
	stopServer := func() {
		if srv != nil {
			srv.stop(own)
			srv, serveDone = nil, nil
		}
	}
	defer func() {
		stopServer()
		log.Info("stopped", "resource", cfg.ResourceName, "socket", own)
	}()

	reconcile := func() {
		if watcher != nil && len(watcher.WatchList()) == 0 {
			if err := watcher.Add(cfg.KubeletDir); err == nil {
				log.Info("watching", "dir", cfg.KubeletDir)
			}
		}
		if srv != nil {
			if id, ok := statSocket(own); !ok || id != srv.id {
				log.Info("plugin socket removed; restarting server", "socket", own)
				stopServer()
				registered = fileID{}
			}
		}
		kid, present := statSocket(kubelet)
		if registered != (fileID{}) && (!present || kid != registered) {
			if present {
				log.Info("kubelet restarted (kubelet.sock recreated); restarting server", "kubelet_socket", kubelet)
			} else {
				log.Info("kubelet.sock gone; waiting for the kubelet", "kubelet_socket", kubelet)
			}
			stopServer()
			registered, backoff, nextTry = fileID{}, 0, time.Time{}
		}
		if srv == nil {
			s, err := startServer(cfg, log)
			if err != nil {
				problem("cannot serve the plugin socket; retrying", "socket", own, "error", err)
				return
			}
			srv, serveDone = s, s.done
			log.Info("serving", "socket", own)
		}
		if present && kid != failedOn {
			backoff, nextTry = 0, time.Time{} // a new kubelet.sock: try it at once
		}
		if !present || registered != (fileID{}) || time.Now().Before(nextTry) {
			return
		}
		if err := register(ctx, cfg); err != nil {
			if ctx.Err() != nil {
				return
			}
			backoff = min(max(2*backoff, minRegisterBackoff), maxRegisterBackoff)
			nextTry, retry, failedOn = time.Now().Add(backoff), time.After(backoff), kid
			problem("registration failed; retrying", "kubelet_socket", kubelet, "error", err, "retry_in", backoff)
			return
		}
		registered, backoff, lastErr, failedOn = kid, 0, "", fileID{}
		log.Info("registered", "resource", cfg.ResourceName, "endpoint", cfg.SocketName, "kubelet_socket", kubelet)
	}

	reconcile()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-events:
			// inotify makes the reaction prompt; the comparison of file IDs in reconcile decides.
			if ev.Name == kubelet || ev.Name == own || ev.Name == cfg.KubeletDir {
				reconcile()
			}
		case err := <-watchErrs:
			problem("inotify error; polling continues", "error", err)
		case err := <-serveDone:
			problem("plugin server ended; restarting", "error", err)
			stopServer()
			registered = fileID{}
			reconcile()
		case <-tick.C:
			reconcile()
		case <-retry:
			retry = nil
			reconcile()
		}
	}
}
