//! Cluster lookup through EKS `DescribeCluster`, in moto.
//!
//! moto's clusters have a made-up endpoint and random certificate authority
//! data, so these tests stop at the lookup and never connect.

use aws_sdk_eks::types::VpcConfigRequest;
use tokenguard_e2e::moto::{ACCOUNT_ID, MotoServer};
use tokenguard_kube::{ClusterSource, EksClusters, SetupError};

#[tokio::test]
async fn describe_cluster_lookup() {
    let moto = MotoServer::start().expect("moto server starts");
    let config = moto.sdk_config();
    let eks = aws_sdk_eks::Client::new(&config);
    eks.create_cluster()
        .name("prod")
        .role_arn(format!("arn:aws:iam::{ACCOUNT_ID}:role/eks-cluster"))
        .resources_vpc_config(VpcConfigRequest::builder().subnet_ids("subnet-1").build())
        .send()
        .await
        .expect("moto creates the cluster");
    let source = ClusterSource::Eks(eks);

    let error = source.endpoint("prod").await.unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, SetupError::InvalidCa { .. }), "{message}");
    assert!(
        message.starts_with("invalid certificate authority for cluster prod: "),
        "{message}"
    );
    assert!(
        message.contains("aws eks describe-cluster --name prod"),
        "{message}"
    );

    let error = source.endpoint("staging").await.unwrap_err();
    assert!(
        matches!(error, SetupError::ClusterNotFound { ref cluster } if cluster == "staging"),
        "{error}"
    );

    assert!(EksClusters::from_sdk_config(&config).is_ok());
}
