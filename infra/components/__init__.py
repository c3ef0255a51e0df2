"""The program's building blocks, one ComponentResource each, with typed (dataclass) args."""

from .database import Database, DatabaseArgs
from .dns import Certificate, Dns, DnsArgs, DnsZone, DnsZoneArgs
from .host import Host, HostArgs
from .iam import CiPolicies, CiPoliciesArgs, HostRole, HostRoleArgs
from .loadbalancer import LoadBalancer, LoadBalancerArgs
from .network import Network, NetworkArgs
from .registry import Registry, RegistryArgs
from .security import SecurityGroups, SecurityGroupsArgs

__all__ = [
    "Certificate", "CiPolicies", "CiPoliciesArgs", "Database", "DatabaseArgs", "Dns", "DnsArgs", "DnsZone", "DnsZoneArgs", "Host",
    "HostArgs", "HostRole", "HostRoleArgs", "LoadBalancer", "LoadBalancerArgs", "Network", "NetworkArgs",
    "Registry", "RegistryArgs", "SecurityGroups", "SecurityGroupsArgs",
]
