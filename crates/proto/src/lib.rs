//! gRPC and queue message types generated from `/proto`. Edit the `.proto` files, not this
//! crate; conversions to domain types live in each service's `grpc.rs`.

pub mod directory {
    pub mod v1 {
        tonic::include_proto!("userimport.directory.v1");
    }
}

pub mod registry {
    pub mod v1 {
        tonic::include_proto!("userimport.registry.v1");
    }
}

pub mod importer {
    pub mod v1 {
        tonic::include_proto!("userimport.importer.v1");
    }
}

/// The encoded `FileDescriptorSet` of every userimport proto file, for gRPC reflection and for
/// tests that enumerate the API.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));
