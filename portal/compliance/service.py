def chart_access_log(patient_id):
    return []
