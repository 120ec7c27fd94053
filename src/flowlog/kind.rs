//! Which product wrote a flow log, NSG or VNet flow logs: records name it, and the tuple layout
//! depends on it. A leaf of its own, so that the record decoder and the tuple reader both name
//! it without importing each other.

/// Which product wrote the record: the tuple layout depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowLogKind {
    /// NSG flow logs (`properties.Version` 1 or 2).
    Nsg,
    /// VNet flow logs (`flowLogVersion` 4).
    Vnet,
}

impl FlowLogKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FlowLogKind::Nsg => "nsg",
            FlowLogKind::Vnet => "vnet",
        }
    }
}
