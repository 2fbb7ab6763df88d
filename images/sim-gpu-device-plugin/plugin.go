package main

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// The environment every allocated container gets (there is no device node or mount to give: no hardware).
const (
	envVisibleDevices = "NVIDIA_VISIBLE_DEVICES"
	envSimulated      = "HARNESS_SIMULATED_GPU"
	envDeviceIDs      = "HARNESS_GPU_DEVICE_IDS"
)

// device is one advertised device: replica r of simulated GPU gpu, ID "sim-gpu-<gpu>::<r>" (the ::<replica>
// suffix is how NVIDIA's plugin names time-sliced replicas of one GPU).
type device struct {
	id      string
	gpu     int
	replica int
}

func physicalID(gpu int) string { return "sim-gpu-" + strconv.Itoa(gpu) }

func deviceID(gpu, replica int) string { return fmt.Sprintf("%s::%d", physicalID(gpu), replica) }

// devicePlugin implements the kubelet's DevicePlugin service for one resource. Its devices never change.
type devicePlugin struct {
	pluginapi.UnimplementedDevicePluginServer
	cfg     Config
	log     *slog.Logger
	devices []device // GPU-major: sim-gpu-0::0, sim-gpu-0::1, ..., sim-gpu-1::0, ...
	byID    map[string]device
	// stop ends every ListAndWatch stream of this plugin's server (closed when the server is stopped).
	stop chan struct{}
}

func newDevicePlugin(cfg Config, log *slog.Logger) *devicePlugin {
	p := &devicePlugin{cfg: cfg, log: log, byID: map[string]device{}, stop: make(chan struct{})}
	for g := 0; g < cfg.GPUs; g++ {
		for r := 0; r < cfg.Replicas; r++ {
			d := device{id: deviceID(g, r), gpu: g, replica: r}
			p.devices = append(p.devices, d)
			p.byID[d.id] = d
		}
	}
	return p
}

// pluginOptions: no PreStartContainer call needed; GetPreferredAllocation is served.
func pluginOptions() *pluginapi.DevicePluginOptions {
	return &pluginapi.DevicePluginOptions{PreStartRequired: false, GetPreferredAllocationAvailable: true}
}

func (p *devicePlugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return pluginOptions(), nil
}

// ListAndWatch sends every device Healthy once, then holds the stream open until the kubelet closes it or the
// plugin's server stops (the simulated devices never fail).
func (p *devicePlugin) ListAndWatch(_ *pluginapi.Empty, s grpc.ServerStreamingServer[pluginapi.ListAndWatchResponse]) error {
	resp := &pluginapi.ListAndWatchResponse{}
	for _, d := range p.devices {
		resp.Devices = append(resp.Devices, &pluginapi.Device{ID: d.id, Health: pluginapi.Healthy})
	}
	if err := s.Send(resp); err != nil {
		return err
	}
	p.log.Info("list-and-watch", "resource", p.cfg.ResourceName, "devices", len(resp.Devices))
	select {
	case <-s.Context().Done():
	case <-p.stop:
	}
	return nil
}

// lookup returns the devices of ids, or InvalidArgument naming the first unknown or repeated ID.
func (p *devicePlugin) lookup(ids []string, what string) ([]device, error) {
	out := make([]device, 0, len(ids))
	seen := map[string]bool{}
	for _, id := range ids {
		d, ok := p.byID[id]
		if !ok {
			return nil, status.Errorf(codes.InvalidArgument, "%s: unknown device ID %q for %s (known: %s .. %s)",
				what, id, p.cfg.ResourceName, p.devices[0].id, p.devices[len(p.devices)-1].id)
		}
		if seen[id] {
			return nil, status.Errorf(codes.InvalidArgument, "%s: device ID %q repeated", what, id)
		}
		seen[id] = true
		out = append(out, d)
	}
	return out, nil
}

// Allocate answers each container with the environment of its devices. NVIDIA_VISIBLE_DEVICES lists the distinct
// physical GPUs behind the replicas (as NVIDIA's plugin does with time-slicing), in GPU order.
func (p *devicePlugin) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	resp := &pluginapi.AllocateResponse{}
	for i, cr := range req.ContainerRequests {
		what := fmt.Sprintf("allocate container %d", i)
		if len(cr.DevicesIds) == 0 {
			return nil, status.Errorf(codes.InvalidArgument, "%s: no device IDs", what)
		}
		if p.cfg.FailRequestsGreaterThanOne && p.cfg.Replicas > 1 && len(cr.DevicesIds) > 1 {
			return nil, status.Errorf(codes.InvalidArgument,
				"%s: request for '%s: %d' too large: maximum request size for shared resources is 1 (failRequestsGreaterThanOne)",
				what, p.cfg.ResourceName, len(cr.DevicesIds))
		}
		devs, err := p.lookup(cr.DevicesIds, what)
		if err != nil {
			p.log.Warn("allocate refused", "resource", p.cfg.ResourceName, "ids", strings.Join(cr.DevicesIds, ","), "error", err)
			return nil, err
		}
		gpus := map[int]bool{}
		for _, d := range devs {
			gpus[d.gpu] = true
		}
		order := make([]int, 0, len(gpus))
		for g := range gpus {
			order = append(order, g)
		}
		sort.Ints(order)
		physical := make([]string, len(order))
		for j, g := range order {
			physical[j] = physicalID(g)
		}
		ids := strings.Join(cr.DevicesIds, ",")
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerAllocateResponse{
			Envs: map[string]string{
				envVisibleDevices: strings.Join(physical, ","),
				envSimulated:      "true",
				envDeviceIDs:      ids,
			},
		})
		p.log.Info("allocate", "resource", p.cfg.ResourceName, "container", i, "ids", ids, "gpus", strings.Join(physical, ","))
	}
	return resp, nil
}

// GetPreferredAllocation spreads replicas across physical GPUs, as NVIDIA's plugin does for time-sliced devices:
// after the must-include devices, it takes each next device from the GPU with the most replicas still available
// (ties: lower GPU index, then lower replica), so pods land on the least shared GPU.
func (p *devicePlugin) GetPreferredAllocation(_ context.Context, req *pluginapi.PreferredAllocationRequest) (*pluginapi.PreferredAllocationResponse, error) {
	resp := &pluginapi.PreferredAllocationResponse{}
	for i, cr := range req.ContainerRequests {
		what := fmt.Sprintf("preferred allocation container %d", i)
		avail, err := p.lookup(cr.AvailableDeviceIDs, what)
		if err != nil {
			return nil, err
		}
		must, err := p.lookup(cr.MustIncludeDeviceIDs, what)
		if err != nil {
			return nil, err
		}
		size := int(cr.AllocationSize)
		if size < len(must) || size > len(avail) {
			return nil, status.Errorf(codes.InvalidArgument, "%s: allocation size %d must be from %d (must-include) to %d (available)",
				what, size, len(must), len(avail))
		}
		chosen := map[string]bool{}
		out := make([]string, 0, size)
		for _, d := range must {
			chosen[d.id] = true
			out = append(out, d.id)
		}
		free := map[int]int{} // available, not yet chosen replicas per GPU
		for _, d := range avail {
			if !chosen[d.id] {
				free[d.gpu]++
			}
		}
		sort.Slice(avail, func(a, b int) bool {
			if avail[a].gpu != avail[b].gpu {
				return avail[a].gpu < avail[b].gpu
			}
			return avail[a].replica < avail[b].replica
		})
		for len(out) < size {
			best := -1
			for j, d := range avail {
				if chosen[d.id] {
					continue
				}
				if best < 0 || free[d.gpu] > free[avail[best].gpu] {
					best = j
				}
			}
			d := avail[best]
			chosen[d.id] = true
			free[d.gpu]--
			out = append(out, d.id)
		}
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerPreferredAllocationResponse{DeviceIDs: out})
	}
	return resp, nil
}

func (p *devicePlugin) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}
