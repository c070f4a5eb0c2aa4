"""enrich/k8s"""
