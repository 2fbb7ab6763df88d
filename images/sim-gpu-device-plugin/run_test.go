package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// TestMain lets a test run the real main() in a child process (SIGTERM handling, exit codes).
func TestMain(m *testing.M) {
	if os.Getenv("SIM_GPU_PLUGIN_TEST_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

const waitFor = 10 * time.Second

// registration is what the fake kubelet saw: the request, and the options it fetched back from the plugin.
type registration struct {
	req  *pluginapi.RegisterRequest
	opts *pluginapi.DevicePluginOptions
}

// fakeKubelet serves the kubelet's Registration service on <dir>/kubelet.sock, using the generated v1beta1 types.
// Like the kubelet it answers a Register only after dialing the plugin's endpoint back and getting its options.
type fakeKubelet struct {
	pluginapi.UnimplementedRegistrationServer
	dir   string
	regs  chan registration
	mu    sync.Mutex
	srv   *grpc.Server
	fails bool // refuse registrations (as a kubelet with an incompatible version would)
}

func newFakeKubelet(t *testing.T, dir string) *fakeKubelet {
	k := &fakeKubelet{dir: dir, regs: make(chan registration, 16)}
	k.start(t)
	t.Cleanup(k.stop)
	return k
}

func (k *fakeKubelet) start(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("unix", filepath.Join(k.dir, kubeletSocketName))
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	pluginapi.RegisterRegistrationServer(s, k)
	go func() { _ = s.Serve(ln) }()
	k.mu.Lock()
	k.srv = s
	k.mu.Unlock()
}

// stop closes the server; its listener removes kubelet.sock.
func (k *fakeKubelet) stop() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.srv != nil {
		k.srv.Stop()
		k.srv = nil
	}
}

func (k *fakeKubelet) Register(ctx context.Context, r *pluginapi.RegisterRequest) (*pluginapi.Empty, error) {
	k.mu.Lock()
	fails := k.fails
	k.mu.Unlock()
	if fails {
		return nil, fmt.Errorf("refused")
	}
	conn, err := grpc.NewClient("unix://"+filepath.Join(k.dir, r.Endpoint), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	opts, err := pluginapi.NewDevicePluginClient(conn).GetDevicePluginOptions(cctx, &pluginapi.Empty{})
	if err != nil {
		return nil, fmt.Errorf("dial back %s: %w", r.Endpoint, err)
	}
	k.regs <- registration{req: r, opts: opts}
	return &pluginapi.Empty{}, nil
}

// waitLog waits until the plugin's log holds n lines with want.
func waitLog(t *testing.T, logs *syncBuffer, want string, n int) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for strings.Count(logs.String(), want) < n {
		if time.Now().After(deadline) {
			t.Fatalf("the plugin log has not %d lines with %q within %s", n, want, waitFor)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (k *fakeKubelet) next(t *testing.T) registration {
	t.Helper()
	select {
	case r := <-k.regs:
		return r
	case <-time.After(waitFor):
		t.Fatalf("no registration within %s", waitFor)
		return registration{}
	}
}

// syncBuffer collects the plugin's log lines; the tests print it when they fail.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// shortDir is a temporary kubelet dir with a short path (unix socket paths hold 107 bytes).
func shortDir(t *testing.T) string {
	d, err := os.MkdirTemp("", "sgdp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func testConfig(dir string, gpus, replicas int) Config {
	return Config{ResourceName: "nvidia.com/gpu", GPUs: gpus, Replicas: replicas, KubeletDir: dir,
		SocketName: "sim.sock", PollInterval: 100 * time.Millisecond, RegisterTimeout: 2 * time.Second}
}

// startPlugin runs Run until the test ends; the returned func stops it and reports Run's error.
func startPlugin(t *testing.T, cfg Config) (stop func() error, logs *syncBuffer) {
	ctx, cancel := context.WithCancel(context.Background())
	logs = &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, slog.New(slog.NewTextHandler(logs, nil))) }()
	var once sync.Once
	var result error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case result = <-done:
			case <-time.After(waitFor):
				result = errors.New("Run did not return after cancel")
			}
		})
		return result
	}
	t.Cleanup(func() {
		_ = stop()
		if t.Failed() {
			t.Logf("plugin log:\n%s", logs)
		}
	})
	return stop, logs
}

// dialPlugin connects to the plugin's socket as the kubelet does.
func dialPlugin(t *testing.T, cfg Config) pluginapi.DevicePluginClient {
	conn, err := grpc.NewClient("unix://"+cfg.SocketPath(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pluginapi.NewDevicePluginClient(conn)
}

func rpcContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

func TestRegistersWithKubelet(t *testing.T) {
	dir := shortDir(t)
	k := newFakeKubelet(t, dir)
	cfg := testConfig(dir, 1, 1)
	startPlugin(t, cfg)
	r := k.next(t)
	if r.req.Version != "v1beta1" || r.req.Endpoint != "sim.sock" || r.req.ResourceName != "nvidia.com/gpu" {
		t.Fatalf("RegisterRequest: version %q endpoint %q resource %q", r.req.Version, r.req.Endpoint, r.req.ResourceName)
	}
	if r.req.Options == nil || !r.req.Options.GetPreferredAllocationAvailable || r.req.Options.PreStartRequired {
		t.Fatalf("RegisterRequest options: %v", r.req.Options)
	}
	// The kubelet dialed the endpoint back during Register: the plugin was serving before it registered.
	if !r.opts.GetPreferredAllocationAvailable || r.opts.PreStartRequired {
		t.Fatalf("options fetched back: %v", r.opts)
	}
	select {
	case r := <-k.regs:
		t.Fatalf("registered twice with the same kubelet: %v", r.req)
	case <-time.After(500 * time.Millisecond):
	}
}

func TestWaitsForKubelet(t *testing.T) {
	dir := shortDir(t)
	cfg := testConfig(dir, 1, 2)
	startPlugin(t, cfg)
	time.Sleep(300 * time.Millisecond)
	if _, ok := statSocket(cfg.SocketPath()); !ok {
		t.Fatal("plugin socket not served while waiting for the kubelet")
	}
	k := newFakeKubelet(t, dir)
	if r := k.next(t); r.req.ResourceName != "nvidia.com/gpu" {
		t.Fatalf("late registration: %v", r.req)
	}
}

func TestRetriesRefusedRegistration(t *testing.T) {
	dir := shortDir(t)
	k := &fakeKubelet{dir: dir, regs: make(chan registration, 16), fails: true}
	k.start(t)
	t.Cleanup(k.stop)
	cfg := testConfig(dir, 1, 1)
	_, logs := startPlugin(t, cfg)
	waitLog(t, logs, "registration failed", 1)
	k.mu.Lock()
	k.fails = false
	k.mu.Unlock()
	k.next(t)
}

// A stale kubelet.sock (nobody listening) backs the retries off; the kubelet.sock of a starting kubelet is tried at
// once, not after the backoff.
func TestNewKubeletSocketSkipsBackoff(t *testing.T) {
	dir := shortDir(t)
	cfg := testConfig(dir, 1, 1)
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: cfg.KubeletSocketPath(), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	_, logs := startPlugin(t, cfg)
	waitLog(t, logs, "registration failed", 4) // after 250ms, 500ms, 1s: the next try is 2s away
	if err := os.Remove(cfg.KubeletSocketPath()); err != nil {
		t.Fatal(err)
	}
	k := newFakeKubelet(t, dir)
	select {
	case <-k.regs:
	case <-time.After(time.Second):
		t.Fatalf("no registration within 1s of a new kubelet.sock:\n%s", logs)
	}
}

func TestListAndWatch(t *testing.T) {
	dir := shortDir(t)
	k := newFakeKubelet(t, dir)
	cfg := testConfig(dir, 2, 3)
	startPlugin(t, cfg)
	k.next(t)
	stream, err := dialPlugin(t, cfg).ListAndWatch(rpcContext(t), &pluginapi.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, d := range resp.Devices {
		if d.Health != pluginapi.Healthy {
			t.Errorf("%s: health %q", d.ID, d.Health)
		}
		ids = append(ids, d.ID)
	}
	want := []string{"sim-gpu-0::0", "sim-gpu-0::1", "sim-gpu-0::2", "sim-gpu-1::0", "sim-gpu-1::1", "sim-gpu-1::2"}
	if !reflect.DeepEqual(ids, want) {
		t.Fatalf("devices: got %v, want %v", ids, want)
	}
	// The stream stays open: no second message, no end.
	next := make(chan error, 1)
	go func() { _, err := stream.Recv(); next <- err }()
	select {
	case err := <-next:
		t.Fatalf("ListAndWatch stream did not stay open: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
}

func TestAllocate(t *testing.T) {
	dir := shortDir(t)
	k := newFakeKubelet(t, dir)
	cfg := testConfig(dir, 2, 4)
	startPlugin(t, cfg)
	k.next(t)
	resp, err := dialPlugin(t, cfg).Allocate(rpcContext(t), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{
		{DevicesIds: []string{"sim-gpu-1::3", "sim-gpu-0::1"}},
		{DevicesIds: []string{"sim-gpu-0::2", "sim-gpu-0::0"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := []map[string]string{
		{"NVIDIA_VISIBLE_DEVICES": "sim-gpu-0,sim-gpu-1", "HARNESS_SIMULATED_GPU": "true", "HARNESS_GPU_DEVICE_IDS": "sim-gpu-1::3,sim-gpu-0::1"},
		{"NVIDIA_VISIBLE_DEVICES": "sim-gpu-0", "HARNESS_SIMULATED_GPU": "true", "HARNESS_GPU_DEVICE_IDS": "sim-gpu-0::2,sim-gpu-0::0"},
	}
	if len(resp.ContainerResponses) != len(want) {
		t.Fatalf("%d container responses, want %d", len(resp.ContainerResponses), len(want))
	}
	for i, cr := range resp.ContainerResponses {
		if !reflect.DeepEqual(cr.Envs, want[i]) {
			t.Errorf("container %d env: got %v, want %v", i, cr.Envs, want[i])
		}
		if len(cr.Devices) != 0 || len(cr.Mounts) != 0 || len(cr.CdiDevices) != 0 {
			t.Errorf("container %d: devices %v mounts %v cdi %v, want none (no hardware)", i, cr.Devices, cr.Mounts, cr.CdiDevices)
		}
	}
}

func TestAllocateUnknownID(t *testing.T) {
	dir := shortDir(t)
	k := newFakeKubelet(t, dir)
	cfg := testConfig(dir, 1, 2)
	startPlugin(t, cfg)
	k.next(t)
	for _, ids := range [][]string{{"sim-gpu-0::0", "sim-gpu-1::0"}, {"sim-gpu-0::2"}, {"GPU-0"}} {
		_, err := dialPlugin(t, cfg).Allocate(rpcContext(t), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{
			{DevicesIds: ids},
		}})
		bad := ids[len(ids)-1]
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), fmt.Sprintf("%q", bad)) {
			t.Errorf("Allocate %v: got %v, want InvalidArgument naming %q", ids, err, bad)
		}
	}
}

func TestGetPreferredAllocationSpreads(t *testing.T) {
	dir := shortDir(t)
	k := newFakeKubelet(t, dir)
	cfg := testConfig(dir, 2, 3)
	startPlugin(t, cfg)
	k.next(t)
	all := []string{"sim-gpu-1::2", "sim-gpu-0::0", "sim-gpu-0::1", "sim-gpu-0::2", "sim-gpu-1::0", "sim-gpu-1::1"}
	cases := []struct {
		avail, must []string
		size        int32
		want        []string
	}{
		{all, nil, 2, []string{"sim-gpu-0::0", "sim-gpu-1::0"}},
		{all, []string{"sim-gpu-0::1"}, 2, []string{"sim-gpu-0::1", "sim-gpu-1::0"}},
		// GPU 1 already holds two pods: the least shared GPU 0 is preferred for both replicas.
		{[]string{"sim-gpu-0::0", "sim-gpu-0::1", "sim-gpu-0::2", "sim-gpu-1::2"}, nil, 2, []string{"sim-gpu-0::0", "sim-gpu-0::1"}},
		{all, nil, 4, []string{"sim-gpu-0::0", "sim-gpu-1::0", "sim-gpu-0::1", "sim-gpu-1::1"}},
	}
	c := dialPlugin(t, cfg)
	for _, tc := range cases {
		resp, err := c.GetPreferredAllocation(rpcContext(t), &pluginapi.PreferredAllocationRequest{ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{
			{AvailableDeviceIDs: tc.avail, MustIncludeDeviceIDs: tc.must, AllocationSize: tc.size},
		}})
		if err != nil {
			t.Fatalf("%+v: %v", tc, err)
		}
		if got := resp.ContainerResponses[0].DeviceIDs; !reflect.DeepEqual(got, tc.want) {
			t.Errorf("available %v must %v size %d: got %v, want %v", tc.avail, tc.must, tc.size, got, tc.want)
		}
	}
	_, err := c.GetPreferredAllocation(rpcContext(t), &pluginapi.PreferredAllocationRequest{ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{
		{AvailableDeviceIDs: []string{"sim-gpu-7::0"}, AllocationSize: 1},
	}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `"sim-gpu-7::0"`) {
		t.Errorf("unknown available ID: %v", err)
	}
}

func TestFailRequestsGreaterThanOne(t *testing.T) {
	cfg := testConfig("/unused", 1, 4)
	cfg.FailRequestsGreaterThanOne = true
	p := newDevicePlugin(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	req := func(ids ...string) *pluginapi.AllocateRequest {
		return &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: ids}}}
	}
	if _, err := p.Allocate(context.Background(), req("sim-gpu-0::0")); err != nil {
		t.Fatalf("one replica: %v", err)
	}
	_, err := p.Allocate(context.Background(), req("sim-gpu-0::0", "sim-gpu-0::1"))
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "'nvidia.com/gpu: 2' too large") {
		t.Fatalf("two replicas with failRequestsGreaterThanOne: %v", err)
	}
	cfg.FailRequestsGreaterThanOne = false
	p = newDevicePlugin(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if _, err := p.Allocate(context.Background(), req("sim-gpu-0::0", "sim-gpu-0::1")); err != nil {
		t.Fatalf("two replicas without it: %v", err)
	}
}

// A kubelet restart: the kubelet removes every socket in its directory (the plugin's too) and creates a new
// kubelet.sock. The plugin serves its socket again and registers again; with a poll interval of a minute, the
// inotify events alone bring it back.
func TestReRegistersAfterKubeletRestart(t *testing.T) {
	for _, tc := range []struct {
		wipe bool
		poll time.Duration
	}{{true, 100 * time.Millisecond}, {false, 100 * time.Millisecond}, {true, time.Minute}, {false, time.Minute}} {
		wipe := tc.wipe
		t.Run(fmt.Sprintf("wipes-plugin-socket=%v/poll=%s", wipe, tc.poll), func(t *testing.T) {
			dir := shortDir(t)
			k := newFakeKubelet(t, dir)
			cfg := testConfig(dir, 1, 2)
			cfg.PollInterval = tc.poll
			_, logs := startPlugin(t, cfg)
			k.next(t)
			waitLog(t, logs, "msg=registered", 1) // the answer reached the plugin before the kubelet goes
			before, _ := statSocket(cfg.SocketPath())
			k.stop()
			if _, ok := statSocket(cfg.KubeletSocketPath()); ok {
				t.Fatal("fake kubelet left kubelet.sock")
			}
			// The plugin notices, and serves a fresh socket for the next kubelet.
			waitLog(t, logs, "kubelet.sock gone", 1)
			waitLog(t, logs, "msg=serving", 2)
			time.Sleep(300 * time.Millisecond) // a kubelet takes a moment to come back
			if wipe {
				// The starting kubelet removes every socket in its directory before it listens.
				if err := os.Remove(cfg.SocketPath()); err != nil {
					t.Fatal(err)
				}
			}
			k.start(t)
			r := k.next(t)
			if r.req.Endpoint != "sim.sock" || r.req.ResourceName != "nvidia.com/gpu" {
				t.Fatalf("re-registration: %v", r.req)
			}
			after, ok := statSocket(cfg.SocketPath())
			if !ok || after == before {
				t.Fatalf("plugin socket not served anew after the kubelet restart (before %v, after %v ok %v)", before, after, ok)
			}
			stream, err := dialPlugin(t, cfg).ListAndWatch(rpcContext(t), &pluginapi.Empty{})
			if err == nil {
				_, err = stream.Recv()
			}
			if err != nil {
				t.Fatalf("ListAndWatch after re-registration: %v", err)
			}
			waitLog(t, logs, "msg=registered", 2)
			if wipe && !strings.Contains(logs.String(), "plugin socket removed") {
				t.Fatalf("log does not show the wiped socket:\n%s", logs)
			}
		})
	}
}

func TestStopRemovesSocket(t *testing.T) {
	dir := shortDir(t)
	k := newFakeKubelet(t, dir)
	cfg := testConfig(dir, 1, 1)
	stop, _ := startPlugin(t, cfg)
	k.next(t)
	if _, ok := statSocket(cfg.SocketPath()); !ok {
		t.Fatal("no plugin socket while running")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(cfg.SocketPath()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("plugin socket left after stop: %v", err)
	}
	if _, ok := statSocket(cfg.KubeletSocketPath()); !ok {
		t.Fatal("the plugin removed kubelet.sock")
	}
}

// The real binary (main) in a child process: SIGTERM ends it with status 0 and removes its socket.
func TestSIGTERMRemovesSocket(t *testing.T) {
	dir := shortDir(t)
	k := newFakeKubelet(t, dir)
	cmd := exec.Command(os.Args[0], "--kubelet-dir", dir, "--socket-name", "main.sock", "--gpus", "2", "--replicas", "2")
	cmd.Env = append(os.Environ(), "SIM_GPU_PLUGIN_TEST_MAIN=1")
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	r := k.next(t)
	if r.req.Endpoint != "main.sock" {
		t.Fatalf("endpoint %q", r.req.Endpoint)
	}
	waitLog(t, &stderr, "msg=registered", 1)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(waitFor):
		t.Fatalf("still running %s after SIGTERM\n%s", waitFor, stderr.String())
	}
	if _, err := os.Lstat(filepath.Join(dir, "main.sock")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left after SIGTERM: %v", err)
	}
	log := stderr.String()
	for _, want := range []string{"msg=start", "devices=4", "msg=registered", "msg=stopped"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
}

func TestBadFlagsExitTwo(t *testing.T) {
	var stderr bytes.Buffer
	if rc := run([]string{"--replicas", "65"}, env(nil), &stderr); rc != 2 {
		t.Fatalf("exit %d, want 2", rc)
	}
	if want := `--replicas "65": must be an integer from 1 to 64`; !strings.Contains(stderr.String(), want) {
		t.Fatalf("stderr %q lacks %q", stderr.String(), want)
	}
}
