package main

import (
	"fmt"
	"strings"

	"github.com/labvm/labvm/daemon/api"
	"github.com/spf13/cobra"
)

func newNetworkCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "network",
		Aliases: []string{"networks", "vnet"},
		Short:   "Manage VNets and subnets (isolated networks of instances)",
		GroupID: "catalogue",
		Long: `A VNet is a Linux bridge with a CIDR; subnets are CIDRs inside it, each with
its gateway on the host. Nothing outside the host can open a connection into
a VNet, VNets cannot reach each other, and on the host only labvmd reaches
guests: use labvm ssh / forward / console. Egress "nat" lets guests reach
the outside through the host; "none" only the gateway.`,
	}
	var egress, peer string
	create := &cobra.Command{
		Use:     "create NAME --cidr CIDR [--egress nat|none] [--peer-traffic deny|allow]",
		Short:   "Create a VNet (owners only)",
		Example: "  sudo labvm network create research --cidr 10.80.0.0/16 --egress none",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cidr, _ := cmd.Flags().GetString("cidr")
			if cidr == "" {
				return usageErrorf("--cidr is required, e.g. --cidr 10.80.0.0/16")
			}
			v, err := a.client().CreateNetwork(cmd.Context(), api.CreateVNetRequest{Name: args[0], CIDR: cidr, Egress: egress, PeerTraffic: peer})
			if err != nil {
				return err
			}
			return a.printVNet(v)
		},
	}
	create.Flags().String("cidr", "", "the VNet's address range")
	create.Flags().StringVar(&egress, "egress", "nat", "nat (guests reach the outside through the host) or none")
	create.Flags().StringVar(&peer, "peer-traffic", "deny", "deny (guests of the VNet cannot reach each other) or allow")

	subnet := &cobra.Command{Use: "subnet", Short: "Add or remove subnets of a VNet"}
	subnetAdd := &cobra.Command{
		Use:     "add VNET NAME --cidr CIDR",
		Short:   "Add a subnet (owners only)",
		Example: "  sudo labvm network subnet add research gpu --cidr 10.80.1.0/24",
		Args:    exactArgs(2, "VNET and NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cidr, _ := cmd.Flags().GetString("cidr")
			if cidr == "" {
				return usageErrorf("--cidr is required, e.g. --cidr 10.80.1.0/24")
			}
			v, err := a.client().AddSubnet(cmd.Context(), args[0], api.CreateSubnetRequest{Name: args[1], CIDR: cidr})
			if err != nil {
				return err
			}
			return a.printVNet(v)
		},
	}
	subnetAdd.Flags().String("cidr", "", "the subnet's range, inside the VNet's")
	subnet.AddCommand(subnetAdd, &cobra.Command{
		Use:     "remove VNET NAME",
		Aliases: []string{"rm", "delete"},
		Short:   "Remove a subnet no instance uses",
		Args:    exactArgs(2, "VNET and NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.client().RemoveSubnet(cmd.Context(), args[0], args[1]); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Subnet %s/%s removed\n", args[0], args[1])
			return nil
		},
	})

	cmd.AddCommand(create, subnet,
		&cobra.Command{
			Use:     "list",
			Aliases: []string{"ls"},
			Short:   "List VNets",
			Args:    cobra.NoArgs,
			RunE: func(cmd *cobra.Command, args []string) error {
				list, err := a.client().Networks(cmd.Context())
				if err != nil {
					return err
				}
				if a.json() {
					return printJSON(a.stdout, list)
				}
				rows := make([][]string, 0, len(list))
				for _, v := range list {
					var subs []string
					for _, s := range v.Subnets {
						subs = append(subs, s.Name+"="+s.CIDR)
					}
					rows = append(rows, []string{v.Name, v.CIDR, v.Egress, orDash(strings.Join(subs, ", ")), fmt.Sprint(len(v.Addresses)), v.Bridge})
				}
				return table(a.stdout, []string{"name", "cidr", "egress", "subnets", "instances", "bridge"}, rows)
			},
		},
		&cobra.Command{
			Use:   "show NAME",
			Short: "Show a VNet, its subnets and the addresses in use",
			Args:  exactArgs(1, "NAME"),
			RunE: func(cmd *cobra.Command, args []string) error {
				v, err := a.client().Network(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				return a.printVNet(v)
			},
		},
		&cobra.Command{
			Use:     "delete NAME",
			Aliases: []string{"rm"},
			Short:   "Delete a VNet no instance uses (its bridge and rules go too)",
			Args:    exactArgs(1, "NAME"),
			RunE: func(cmd *cobra.Command, args []string) error {
				if err := a.client().DeleteNetwork(cmd.Context(), args[0]); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "VNet %s deleted\n", args[0])
				return nil
			},
		},
	)
	return cmd
}

func (a *app) printVNet(v api.VNet) error {
	if a.json() {
		return printJSON(a.stdout, v)
	}
	fmt.Fprintf(a.stdout, "VNet:    %s (%s, egress %s, peer traffic %s, bridge %s)\n", v.Name, v.CIDR, v.Egress, v.PeerTraffic, v.Bridge)
	if len(v.Subnets) == 0 {
		fmt.Fprintf(a.stdout, "Subnets: none; add one with `labvm network subnet add %s NAME --cidr CIDR`\n", v.Name)
	} else {
		fmt.Fprintln(a.stdout, "Subnets:")
		for _, s := range v.Subnets {
			fmt.Fprintf(a.stdout, "  %-16s %-18s gateway %s\n", s.Name, s.CIDR, s.Gateway)
		}
	}
	if len(v.Addresses) > 0 {
		fmt.Fprintln(a.stdout, "Addresses in use:")
		rows := make([][]string, 0, len(v.Addresses))
		for _, ad := range v.Addresses {
			rows = append(rows, []string{ad.IP, ad.Subnet, ad.Instance, string(ad.State)})
		}
		return table(a.stdout, []string{"ip", "subnet", "instance", "state"}, rows)
	}
	return nil
}
