"""The AWS edge (boto3): credentials, the flow-log subscription, the CloudWatch Logs reader."""
