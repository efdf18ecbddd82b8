package system

import (
	"context"
	"fmt"
	"strings"

	"github.com/esxi-rescue/rescue/rescue/cmdline"
	"github.com/esxi-rescue/rescue/rescue/flow"
	"github.com/esxi-rescue/rescue/rescue/job"
	"github.com/esxi-rescue/rescue/rescue/keep"
)

// Job fetches rescue.job= (flow.JobFetcher): ${mac} is the boot NIC's MAC
// (BOOTIF=, else the interface the network came up on), ${serial} the DMI
// system serial. The job's arguments are applied after the command
// line's (they win); without a job the command line's settings stay.
func (s *System) Job(ctx context.Context, c *cmdline.Config) (*cmdline.Config, *flow.JobInfo, error) {
	v := job.Vars{Serial: keep.Serial(s.Sys.Root)}
	switch {
	case c.BootIF != nil:
		v.MAC = job.MACVar(c.BootIF.String())
	case s.net != nil:
		v.MAC = job.MACVar(s.net.MAC)
	}
	u, err := job.Expand(c.Job, v)
	if err != nil {
		return nil, nil, err
	}
	info := &flow.JobInfo{URL: cmdline.RedactURL(u), Raw: u}
	args, found, err := (&job.Client{}).Fetch(ctx, u)
	if err != nil {
		return nil, info, err
	}
	if !found {
		s.Con.Printf("job: none for this machine at %s; the command line's settings apply", info.URL)
		return c, info, nil
	}
	info.Found = true
	var words []string
	for _, a := range args {
		words = append(words, a.Key+"="+a.Value)
	}
	s.Con.Printf("job: %s: %s", info.URL, strings.Join(words, " "))
	run, err := cmdline.Parse(append(append([]cmdline.Arg(nil), s.BaseArgs...), args...))
	if err != nil {
		return nil, info, fmt.Errorf("the job's settings: %w", err)
	}
	return run, info, nil
}
