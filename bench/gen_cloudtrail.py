#!/usr/bin/env python3
"""Writes a CloudTrail S3 log file of IRSA token exchanges for benchmarks.

Usage: gen_cloudtrail.py OUT RECORDS

OUT is gzip-compressed when its name ends in .gz, as CloudTrail delivers log
files to S3, and plain JSON otherwise.

The records follow the shape of tests/fixtures/cloudtrail/irsa-success.json,
spread over 200 service accounts and one day, with fake ids: most come from
the cluster's NAT address with the SDK's user agent, one in a thousand from
an outside address with the AWS CLI.
"""

import gzip
import json
import sys
from datetime import datetime, timedelta, timezone

ISSUER = "oidc.eks.eu-west-1.amazonaws.com/id/0A1B2C3D4E5F60718293A4B5C6D7E8F9"
PROVIDER = f"arn:aws:iam::111122223333:oidc-provider/{ISSUER}"
BOTO3 = "Boto3/1.35.10 md/Botocore#1.35.10 ua/2.0 os/linux#6.1.112 md/arch#x86_64"
AWS_CLI = "aws-cli/2.22.4 md/awscrt#0.23.1 ua/2.0 os/linux#6.8.0 md/arch#x86_64"


def record(index, start):
    account = f"sa-{index % 200}"
    subject = f"system:serviceaccount:bench:{account}"
    time = start + timedelta(seconds=index * 86400 // RECORDS)
    outside = index % 1000 == 999
    return {
        "eventVersion": "1.08",
        "userIdentity": {
            "type": "WebIdentityUser",
            "principalId": f"{PROVIDER}:sts.amazonaws.com:{subject}",
            "userName": subject,
            "identityProvider": PROVIDER,
        },
        "eventTime": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": "sts.amazonaws.com",
        "eventName": "AssumeRoleWithWebIdentity",
        "awsRegion": "eu-west-1",
        "sourceIPAddress": "203.0.113.9" if outside else "198.51.100.20",
        "userAgent": AWS_CLI if outside else BOTO3,
        "requestParameters": {
            "roleArn": f"arn:aws:iam::111122223333:role/{account}",
            "roleSessionName": f"botocore-session-{int(time.timestamp())}",
        },
        "responseElements": {
            "credentials": {
                "accessKeyId": "ASIAEXAMPLEFAKE00001",
                "sessionToken": "REDACTED",
                "expiration": "Dec 1, 2026, 11:00:05 AM",
            },
            "subjectFromWebIdentityToken": subject,
            "provider": PROVIDER,
            "audience": "sts.amazonaws.com",
        },
        "requestID": f"00000000-0000-4000-8000-{index:012d}",
        "eventID": f"10000000-0000-4000-8000-{index:012d}",
        "readOnly": True,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": "111122223333",
        "eventCategory": "Management",
    }


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: gen_cloudtrail.py OUT RECORDS")
    RECORDS = int(sys.argv[2])
    start = datetime(2026, 11, 20, tzinfo=timezone.utc)
    records = [record(i, start) for i in range(RECORDS)]
    path = sys.argv[1]
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wt") as out:
        json.dump({"Records": records}, out)
